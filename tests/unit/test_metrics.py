"""Evaluation metrics and gates for every task: the task's metrics, its constant baseline, its default gates,
its champion direction and tolerance, slices, and the model card's picture (real numbers, no Ray)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raymlops.errors import ConfigError
from raymlops.evaluation.metrics import (
    binary_metrics,
    champion_gates,
    check_gates,
    gate_results,
    parse_gate,
    slice_metrics,
)
from raymlops.registry.mlflow_registry import RegisteredVersion
from raymlops.registry.tags import INPUT_COLUMNS_TAG, TASK_TAG
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.codec import task_to_json
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask

FLIGHTS = BinaryTask(threshold=15.0)
COLOURS = MulticlassTask(classes=("blue", "green", "red"))
PRICE = RegressionTask()


def test_perfect_and_constant_predictors() -> None:
    y = np.array([0, 0, 1, 1, 0, 1], dtype=np.float32)
    perfect = binary_metrics(y, y.astype(float), "test")
    constant = binary_metrics(y, np.full(6, 0.5), "test")
    assert perfect["test/auc"] == 1.0 and perfect["test/accuracy"] == 1.0
    assert constant["test/auc"] == 0.5
    assert perfect["test/logloss"] < constant["test/logloss"]
    assert FLIGHTS.metrics(y, np.full(6, 0.5), "test") == constant  # the same numbers through the task


def test_gates_report_each_failure_and_unknown_metrics() -> None:
    metrics = {"test/auc": 0.55, "test/logloss": 0.7}
    failures = check_gates(metrics, ["test/auc >= 0.6", "test/acc>0.5", "test/logloss <= 0.8"])
    assert failures[0] == "test/auc = 0.5500, must be >= 0.6"
    assert "test/acc: no such metric" in failures[1] and "test/auc" in failures[1]
    assert len(failures) == 2
    assert check_gates(metrics, ["test/auc >= 0.5", "test/logloss<0.71"]) == []
    assert check_gates({"test/auc": float("nan")}, ["test/auc >= 0.5"]) != []


def test_malformed_gate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"test/auc = 0\.6"):
        parse_gate("test/auc = 0.6")
    with pytest.raises(ConfigError, match="baseline"):
        parse_gate("test/auc > champion")
    assert parse_gate("valid/logloss<1e-1") == ("valid/logloss", "<", 0.1)
    assert parse_gate("test/macro_f1 > Baseline") == ("test/macro_f1", ">", "baseline")


def _binary_rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(np.float64)
    proba = np.clip(0.3 + 0.4 * (y - 0.3) + rng.normal(scale=0.15, size=400), 0.01, 0.99)
    return y, proba


def _multiclass_rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = rng.choice(3, size=600, p=[0.5, 0.3, 0.2]).astype(np.float64)
    logits = rng.normal(size=(600, 3))
    logits[np.arange(600), y.astype(int)] += 1.5  # right about two rows in three
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba.astype(np.float32)


def _regression_rows() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    y = 200.0 + 30.0 * rng.normal(size=500)
    return y, y + rng.normal(scale=10.0, size=500)


def test_each_task_beats_its_constant_baseline_by_its_default_gate() -> None:
    """The default gate (``<primary> > / < baseline``) with each task's real metrics and baseline."""
    cases = [
        (FLIGHTS, *_binary_rows(), "test/auc > baseline"),
        (COLOURS, *_multiclass_rows(), "test/macro_f1 > baseline"),
        (PRICE, *_regression_rows(), "test/rmse < baseline"),
    ]
    for task, y, pred, gate in cases:
        assert task.default_gates("test") == [gate]
        metrics = task.metrics(y, pred, "test")
        baseline = task.baseline_metrics(y, y, "test")  # fitted on the same targets: the best constant
        [result] = gate_results(metrics, task.default_gates("test"), baseline=baseline, task=task)
        assert result.passed, (task.name, result.detail)
        assert result.gate == gate and "baseline" in result.detail
        # The constant predictor itself does not pass the gate (not strictly better than itself).
        [itself] = gate_results(baseline, task.default_gates("test"), baseline=baseline, task=task)
        assert not itself.passed and "must be" in itself.detail
    binary_baseline = FLIGHTS.baseline_metrics(_binary_rows()[0], _binary_rows()[0], "test")
    assert binary_baseline["test/auc"] == 0.5  # a constant ranks nothing
    y, _ = _multiclass_rows()
    colour_baseline = COLOURS.baseline_metrics(y, y, "test")
    assert colour_baseline["test/accuracy"] == pytest.approx(np.mean(y == 0))  # always the commonest
    y, _ = _regression_rows()
    assert PRICE.baseline_metrics(y, y, "test")["test/rmse"] == pytest.approx(np.std(y))


def test_primary_names_the_tasks_primary_metric_in_gates_and_tolerances() -> None:
    y, pred = _regression_rows()
    metrics = PRICE.metrics(y, pred, "test")
    [result] = gate_results(metrics, ["test/primary <= 12"], task=PRICE)
    assert result.gate == "test/rmse <= 12" and result.passed
    [missing] = gate_results(metrics, ["test/auc > baseline"], baseline={}, task=PRICE)
    assert not missing.passed and "baseline has no such metric" in missing.detail
    with pytest.raises(ConfigError, match="primary"):
        gate_results(metrics, ["test/primary <= 12"])  # no task to say which


def test_champion_gate_knows_which_direction_is_worse() -> None:
    candidate = {"test/auc": 0.70, "test/logloss": 0.60}
    champion = {"test/auc": 0.73, "test/logloss": 0.58}
    results = champion_gates(
        candidate, champion, {"test/auc": 0.02, "test/logloss": 0.05}, "champion v1", FLIGHTS
    )
    auc, logloss = results
    assert not auc.passed and "worse by 0.0300" in auc.detail and "vs champion v1 0.7300" in auc.detail
    assert logloss.passed  # 0.02 higher log loss is within the 0.05 allowed
    [better] = champion_gates({"test/auc": 0.75}, champion, {"test/auc": 0.0}, "champion v1", FLIGHTS)
    assert better.passed and "better by 0.0200" in better.detail
    [unknown] = champion_gates(candidate, champion, {"test/f1": 0.1}, "champion v1", FLIGHTS)
    assert not unknown.passed and "no such metric" in unknown.detail
    with pytest.raises(ConfigError, match="no known direction"):
        champion_gates({"test/f1": 1.0}, {"test/f1": 1.0}, {"test/f1": 0.1}, "champion v1", FLIGHTS)


def test_champion_direction_and_default_tolerance_per_task() -> None:
    # multiclass: macro-F1 higher is better, log loss lower; default tolerance 0.02 of macro-F1
    champion = {"test/macro_f1": 0.60, "test/logloss": 0.90}
    assert COLOURS.champion_tolerance("test", champion) == {"test/macro_f1": 0.02}
    [f1] = champion_gates(
        {"test/macro_f1": 0.59}, champion, COLOURS.champion_tolerance("test", champion), "v3", COLOURS
    )
    assert f1.passed and "worse by 0.0100" in f1.detail
    [f1] = champion_gates({"test/macro_f1": 0.57}, champion, {"test/primary": 0.02}, "v3", COLOURS)
    assert not f1.passed and f1.gate.startswith("test/macro_f1 vs v3")
    # regression: RMSE lower is better, the default tolerance is 2% of the champion's RMSE (it has units)
    champion = {"test/rmse": 50.0, "test/r2": 0.8}
    assert PRICE.champion_tolerance("test", champion) == {"test/rmse": pytest.approx(1.0)}
    bounds = PRICE.champion_tolerance("test", champion)
    [within] = champion_gates({"test/rmse": 50.9}, champion, bounds, "v2", PRICE)
    [beyond] = champion_gates({"test/rmse": 51.5}, champion, bounds, "v2", PRICE)
    [lower] = champion_gates({"test/rmse": 40.0}, champion, bounds, "v2", PRICE)
    assert within.passed and not beyond.passed and lower.passed and "better by 10.0000" in lower.detail
    [r2] = champion_gates({"test/r2": 0.7}, champion, {"test/r2": 0.05}, "v2", PRICE)
    assert not r2.passed and "worse by 0.1000" in r2.detail  # r2: higher is better


def test_a_champion_of_another_task_is_not_compared() -> None:
    from raymlops.stages.evaluate import _score_champion

    table = pa.table({"num_a": [1.0], "label": [0.0]})
    for theirs, mine in ((PRICE, COLOURS), (MulticlassTask(classes=("a", "b")), COLOURS), (COLOURS, FLIGHTS)):
        holder = RegisteredVersion("m", "7", "run", "file:///x", {TASK_TAG: task_to_json(theirs)})
        result = _score_champion(None, holder, mine, table, np.zeros(1), "test")
        assert result["metrics"] == {} and "another task" in result["skipped"]
    # A version registered before tasks existed (no task tag) is the flights binary task: compared, so the
    # scoring goes on to check its input columns (here the rows lack one, which it names).
    legacy = RegisteredVersion("m", "1", "run", "file:///x", {INPUT_COLUMNS_TAG: "dep_delay:float"})
    result = _score_champion(None, legacy, FLIGHTS, table, np.zeros(1), "test")
    assert "skipped" not in result and result["problem"] == "needs column(s) ['dep_delay']"
    assert FLIGHTS.comparable(BinaryTask(threshold=0.0))
    assert not BinaryTask(positive="YES", negative="NO").comparable(BinaryTask(positive="NO", negative="YES"))


def test_slice_metrics_count_every_value_and_skip_metrics_for_small_slices() -> None:
    rng = np.random.default_rng(0)
    carriers = np.array(["UA"] * 60 + ["AA"] * 40 + ["HA"] * 5)
    y = rng.integers(0, 2, len(carriers)).astype(float)
    proba = np.where(carriers == "UA", y * 0.8 + 0.1, 0.5)  # UA separable, the rest constant
    table = pa.table({"carrier": carriers, "origin": ["EWR"] * len(carriers)})
    slices = slice_metrics(table, y, proba, task=FLIGHTS, columns=["carrier"], split="test", min_rows=30)
    rows = {r["value"]: r for r in slices["carrier"]}
    assert [r["value"] for r in slices["carrier"]] == ["UA", "AA", "HA"]  # most frequent first
    assert rows["UA"]["rows"] == 60 and rows["UA"]["auc"] == 1.0 and rows["AA"]["auc"] == 0.5
    assert rows["HA"] == {"value": "HA", "rows": 5}  # counted, but too small for metrics
    with pytest.raises(ConfigError, match="dest"):
        slice_metrics(table, y, proba, task=FLIGHTS, columns=["dest"], split="test")


def test_slices_compute_each_tasks_metrics() -> None:
    y, proba = _multiclass_rows()
    shop = np.where(np.arange(len(y)) % 2 == 0, "north", "south")
    table = pa.table({"shop": shop})
    [north, south] = slice_metrics(table, y, proba, task=COLOURS, columns=["shop"], split="test")["shop"]
    mask = shop == "north"
    assert north["macro_f1"] == round(COLOURS.metrics(y[mask], proba[mask], "test")["test/macro_f1"], 6)
    assert set(north) == {"value", "rows", "accuracy", "macro_f1", "logloss"} and south["rows"] == 300
    y, pred = _regression_rows()
    [row] = slice_metrics(
        pa.table({"shop": ["one"] * len(y)}), y, pred, task=PRICE, columns=["shop"], split="test"
    )["shop"]
    assert row["rmse"] == round(PRICE.metrics(y, pred, "test")["test/rmse"], 6) and "auc" not in row


def test_each_task_draws_the_picture_that_fits() -> None:
    y, proba = _binary_rows()
    binary = FLIGHTS.card_picture(y, proba)
    assert binary is not None and binary["kind"] == "confusion_matrix" and binary["labels"] == ["0", "1"]
    counts = np.array(binary["counts"])
    assert counts.sum() == len(y) and counts[1].sum() == y.sum()  # rows: actual, columns: predicted
    assert counts[1, 1] == int(np.sum((y == 1) & (proba >= 0.5)))
    yes_no = BinaryTask(positive="YES", negative="NO").card_picture(y, proba)
    assert yes_no is not None and yes_no["labels"] == ["NO", "YES"]
    y, proba = _multiclass_rows()
    multi = COLOURS.card_picture(y, proba)
    assert multi is not None and multi["labels"] == ["blue", "green", "red"]
    counts = np.array(multi["counts"])
    assert counts.shape == (3, 3) and np.trace(counts) / len(y) == pytest.approx(
        COLOURS.metrics(y, proba, "test")["test/accuracy"]
    )
    y, pred = _regression_rows()
    scatter = PRICE.card_picture(y, pred)
    assert scatter is not None and scatter["kind"] == "predicted_vs_actual" and scatter["rows"] == 500
    assert len(scatter["actual"]) == len(scatter["predicted"]) == 500
    big = PRICE.card_picture(np.arange(2000.0), np.arange(2000.0))
    assert big is not None and len(big["actual"]) == 500 and big["actual"] == big["predicted"]
