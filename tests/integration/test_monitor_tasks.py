"""The monitor for every task, end to end through the real pieces: a version registered in MLflow (SQLite)
with its task tag, test metrics and test-split prediction profile; its served rows written by the router's
``PredictionLogger``; feedback parsed from ``/v1/feedback`` bodies (``parse_feedback``) in the label's own
terms (``"YES"``, ``"gold"``, ``231.5``) and logged; ``run_monitor`` on the window.

Per task, version 1 answers rows drawn like the test split and version 2 rows shifted (``num_a + 2``), so:
v1's live metrics equal the task's metrics computed here independently (scikit-learn / numpy) on the rows
that got a known outcome, outcomes the task does not know are counted, and its predictions do not drift;
v2's do (binary: probabilities; multiclass: the answered classes' shares; regression: the values).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

from raymlops.config import compose
from raymlops.monitoring.monitor import run_monitor, write_outputs
from raymlops.monitoring.prediction_log import PredictionLogger, parse_feedback, read_predictions
from raymlops.monitoring.version_info import PREDICTION_PROFILE, prediction_profile
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.registry.tags import TASK_TAG
from raymlops.serving.spec import ModelSpec
from raymlops.tasks.base import Task
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.codec import task_to_json
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask
from tests.task_tables import CLASSES, binary_yes_no, multiclass_strings, regression_numbers

INPUTS = {"num_a": "float", "num_b": "float", "cat": "string"}
ROWS, ROWS_PER_REQUEST = 900, 3
UNKNOWN = 7  # feedback items whose outcome is no outcome of the task


def _inputs(table: pa.Table, shift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = table["num_a"].to_numpy() + shift
    b = np.nan_to_num(table["num_b"].to_numpy(zero_copy_only=False).astype(np.float64))
    return a, b, table["cat"].to_numpy(zero_copy_only=False)


def binary_model(table: pa.Table, shift: float = 0.0) -> np.ndarray:
    a, b, cat = _inputs(table, shift)
    return (1 / (1 + np.exp(-(1.5 * a - b + (cat == "z") - 1.2)))).astype(np.float32)


def multiclass_model(table: pa.Table, shift: float = 0.0) -> np.ndarray:
    a, b, cat = _inputs(table, shift)
    score = a + 0.5 * b + 0.8 * (cat == "x")
    logits = np.stack([-2.0 * score, -2.0 * np.abs(score - 0.6), 2.0 * (score - 1.0)], axis=1)
    return (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)


def regression_model(table: pa.Table, shift: float = 0.0) -> np.ndarray:
    a, b, cat = _inputs(table, shift)
    return (200.0 + 30.0 * a - 15.0 * b + 25.0 * (cat == "y")).astype(np.float32)


CASES: dict[str, tuple[Task, Any, Any, Any]] = {
    "binary": (BinaryTask(positive="YES", negative="NO"), binary_yes_no, binary_model, "MAYBE"),
    "multiclass": (MulticlassTask(classes=CLASSES), multiclass_strings, multiclass_model, "platinum"),
    "regression": (RegressionTask(), regression_numbers, regression_model, "n/a"),
}


def expected_metrics(name: str, outcomes: list[Any], pred: np.ndarray) -> dict[str, float]:
    """The task's live metrics computed here, from the label values as sent, without the task's code."""
    if name == "binary":
        y = np.array([o == "YES" for o in outcomes], np.float64)
        return {"auc": roc_auc_score(y, pred), "accuracy": accuracy_score(y, pred >= 0.5)}
    if name == "multiclass":
        y = np.array([CLASSES.index(o) for o in outcomes])
        chosen = pred.argmax(axis=1)
        return {
            "accuracy": accuracy_score(y, chosen),
            "macro_f1": f1_score(y, chosen, average="macro", labels=[0, 1, 2], zero_division=0),
            "logloss": log_loss(y, pred.astype(np.float64), labels=[0, 1, 2]),
        }
    y = np.asarray(outcomes, np.float64)
    error = pred.astype(np.float64) - y
    return {"mae": float(np.mean(np.abs(error))), "rmse": float(np.sqrt(np.mean(error**2)))}


def register(cfg: Any, state: Path, model: str, task: Task, test: pa.Table, pred: np.ndarray) -> None:
    registry = ModelRegistry.from_config(cfg.registry)
    files = state / f"files-{model}"
    files.mkdir()
    (files / "model.onnx").write_bytes(b"stand-in")
    prediction_profile(pred, "test split", task).save(files / PREDICTION_PROFILE)
    y = np.asarray(task.target(test["target"].combine_chunks()), np.float64)
    metrics = task.metrics(y, pred, "test")
    for version in ("1", "2"):
        run = registry.client.create_run(registry.experiment_id(), run_name=f"{model}-v{version}")
        for key, value in metrics.items():
            registry.client.log_metric(run.info.run_id, key, value)
        registered = registry.register_version(
            model_name=model,
            run_id=run.info.run_id,
            model_files=[files / "model.onnx", files / PREDICTION_PROFILE],
            tags={
                "raymlops.input_columns": ",".join(f"{c}:{k}" for c, k in INPUTS.items()),
                TASK_TAG: task_to_json(task),
            },
        )
        assert registered.version == version
        registry.client.set_terminated(run.info.run_id)


def serve(root: Path, model: str, task: Task, version: str, table: pa.Table, pred: np.ndarray) -> list[str]:
    """Log ``table``'s rows as the router does, a request per ROWS_PER_REQUEST rows; their ids."""
    spec = ModelSpec(model, version, "/m.onnx", "d", INPUTS, threshold=0.5, task=task.describe())
    logger = PredictionLogger(str(root), flush_rows=100_000, flush_interval_s=60)
    ids = []
    for start in range(0, table.num_rows, ROWS_PER_REQUEST):
        rows = table.slice(start, ROWS_PER_REQUEST).select(list(INPUTS))
        ids.append(f"{model}-{version}-{start:05d}")
        logger.log(spec, "served", ids[-1], rows, pred[start : start + ROWS_PER_REQUEST], 2.0)
    logger.close()
    return ids


@pytest.fixture(scope="module", params=list(CASES))
def monitored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    name = request.param
    task, make, model_fn, unknown = CASES[name]
    state = tmp_path_factory.mktemp(f"monitor-{name}")
    cfg = compose([f"state_dir={state}"])
    model, root = f"task-{name}", Path(cfg.monitor.log_root)
    test, live = make(2_000, seed=1), make(ROWS, seed=2)
    register(cfg, state, model, task, test, model_fn(test))
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    pred = model_fn(live)
    ids = serve(root, model, task, "1", live, pred)
    serve(root, model, task, "2", live, model_fn(live, shift=2.0))
    # Feedback for two rows of three, in the label's own terms, as clients post it; a few unknown ones.
    labelled = [i for i in range(ROWS) if i % 3 != 2]
    outcomes = [live["target"][i].as_py() for i in labelled]
    items = [
        {"prediction_id": ids[i // ROWS_PER_REQUEST], "row": i % ROWS_PER_REQUEST, "outcome": o}
        for i, o in zip(labelled, outcomes, strict=True)
    ]
    items += [{"prediction_id": ids[k], "row": 2, "outcome": unknown} for k in range(UNKNOWN)]
    logger = PredictionLogger(str(root), flush_rows=100_000, flush_interval_s=60)
    for start in range(0, len(items), 250):
        logger.log_feedback(parse_feedback(json.dumps(items[start : start + 250]).encode(), max_items=250))
    logger.close()
    until = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    report = run_monitor(cfg, model=model, since=started, until=until)
    return {
        "name": name,
        "task": task,
        "cfg": cfg,
        "report": report,
        "pred": pred[labelled],
        "outcomes": outcomes,
        "root": root,
        "model": model,
    }


def test_the_log_holds_the_tasks_output_as_answered(monitored: dict[str, Any]) -> None:
    table = read_predictions(monitored["root"], monitored["model"])
    mine = table.filter(pa.compute.equal(table["version"], "1"))
    assert mine.num_rows == ROWS
    name = monitored["name"]
    if name == "multiclass":
        logged = np.array(mine["probabilities"].to_pylist())
        assert logged.shape == (ROWS, len(CLASSES))
        np.testing.assert_array_equal(mine["class_index"].to_numpy(), logged.argmax(axis=1))
        assert mine["label"].null_count == ROWS
    elif name == "regression":
        assert mine["value"].null_count == 0 and mine["probability"].null_count == ROWS
    else:
        assert "value" not in mine.column_names and "probabilities" not in mine.column_names
        np.testing.assert_array_equal(mine["label"].to_numpy(), mine["probability"].to_numpy() >= 0.5)


def test_live_metrics_equal_the_tasks_metrics_computed_independently(monitored: dict[str, Any]) -> None:
    report, task = monitored["report"], monitored["task"]
    accuracy = report.versions["1"]["accuracy"]
    assert accuracy["rows"] == len(monitored["outcomes"]) and accuracy["judged"]
    assert accuracy["unknown_outcomes"] == UNKNOWN and accuracy["primary"] == task.primary_metric
    expected = expected_metrics(monitored["name"], monitored["outcomes"], monitored["pred"])
    for metric, value in expected.items():
        assert accuracy["live"][metric] == pytest.approx(value, rel=1e-4, abs=1e-5), metric
    # Live rows are drawn like the test split: no metric worse than test by the alert's margin.
    assert not accuracy["dropped"], accuracy
    assert set(accuracy["test"]) >= set(task.live_metrics()) - {"auc"} and accuracy["drop"]
    assert f"{UNKNOWN} outcomes unknown to the task" in report.summary()


def test_prediction_drift_of_the_tasks_statistic(monitored: dict[str, Any]) -> None:
    report = monitored["report"]
    v1, v2 = report.versions["1"]["prediction_drift"], report.versions["2"]["prediction_drift"]
    assert v1["reference"] == v2["reference"] == "test_split"
    assert v1["judged"] and not v1["drifted"] and v1["psi"] < 0.1, v1
    assert v2["drifted"] and v2["psi"] > 0.5, v2
    kinds = {(a["version"], a["kind"]) for a in report.alerts}
    assert ("2", "prediction_drift") in kinds and ("1", "prediction_drift") not in kinds
    if monitored["name"] == "multiclass":  # the classes' shares, as categories
        assert v2["statistic"] == "predicted_class" and set(v2["shares"]["current"]) - {"__other__"} == {
            "0",
            "1",
            "2",
        }
        assert v2["shares"]["current"]["2"] > v1["shares"]["current"]["2"] + 0.3
    else:
        assert v2["statistic"] == ("value" if monitored["name"] == "regression" else "probability")
        assert v2["mean"]["current"] > v1["mean"]["current"]


def test_the_exporter_publishes_the_tasks_live_metrics(monitored: dict[str, Any]) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    paths = write_outputs(monitored["report"], monitored["cfg"].monitor.out_dir)
    samples = {
        (s.name, s.labels.get("version"), s.labels.get("metric")): s.value
        for family in text_string_to_metric_families(paths["prom"].read_text())
        for s in family.samples
    }
    live = monitored["report"].versions["1"]["accuracy"]["live"]
    for metric in monitored["task"].live_metrics():
        if live.get(metric) is not None:
            assert samples[("raymlops_live_metric", "1", metric)] == pytest.approx(live[metric])
    assert samples[("raymlops_feedback_unknown_outcomes", "1", None)] == UNKNOWN
