"""The evaluate and explain stages for multiclass and regression on generated tables: the real features
stage on a local Ray, a small XGBoost per task (plain xgboost on the train split), the task's metrics,
baseline, default gates, picture, and a champion of another task left uncompared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.task_tables import CLASSES, multiclass_strings, regression_numbers, small_xgboost, table_overrides


def _pipeline(tmp_path: Path, kind: str) -> tuple[Any, Any]:
    """ingest -> features (real stages) -> a fitted XGBoost (the train stage's output) for ``kind``."""

    from raymlops.config import compose
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.state import PipelineState, TrainOutput
    from raymlops.stages.features import FeaturesStage
    from raymlops.stages.ingest import IngestStage

    table = multiclass_strings(1_200) if kind == "multiclass" else regression_numbers(1_200)
    path = tmp_path / "table.parquet"
    pq.write_table(table, path)
    cfg = compose(
        [
            f"state_dir={tmp_path}",
            *table_overrides(path),
            f"data.name={kind}",
            "evaluate.slices=[cat]",
            "explain.background_rows=20",
            "explain.rows=30",
        ]
    )
    ctx = RunContext(cfg)
    state = FeaturesStage().run(ctx, IngestStage().run(ctx, PipelineState()))
    features = state.require("features")
    model = small_xgboost(features, rounds=25)
    return ctx, state.with_(train=TrainOutput(model, [], ""))


def test_multiclass_evaluation_uses_the_tasks_metrics_baseline_gates_and_picture(
    ray_local, tmp_path: Path
) -> None:
    from raymlops.stages.evaluate import EvaluateStage

    ctx, state = _pipeline(tmp_path, "multiclass")
    out = EvaluateStage().run(ctx, state).require("evaluate")
    assert set(out.metrics) == {"test/accuracy", "test/macro_f1", "test/logloss", "test/rows"}
    # The constant baseline predicts the train class shares: its accuracy is the commonest class's share.
    assert out.baseline["test/macro_f1"] < 0.3 < out.metrics["test/macro_f1"]
    assert out.metrics["test/accuracy"] > out.baseline["test/accuracy"]
    [gate] = out.gates  # evaluate.gates: null -> the task's default gate; no champion yet
    assert gate.gate == "test/macro_f1 > baseline" and gate.passed and out.passed
    report = json.loads(out.report_path.read_text())
    assert report["task"] == {"task": "multiclass", "classes": list(CLASSES)}
    assert report["directions"] == {"accuracy": "higher", "macro_f1": "higher", "logloss": "lower"}
    picture = report["picture"]
    assert picture["kind"] == "confusion_matrix" and picture["labels"] == list(CLASSES)
    counts = np.array(picture["counts"])
    assert counts.sum() == out.metrics["test/rows"]
    assert np.trace(counts) / counts.sum() == pytest.approx(out.metrics["test/accuracy"])
    cat = {row["value"]: row for row in out.slices["cat"]}
    assert set(cat) == {"x", "y", "z"} and "macro_f1" in cat["x"] and "auc" not in cat["x"]
    figures = ctx.figures["evaluate"]
    assert figures["macro_f1"] == round(out.metrics["test/macro_f1"], 4) and figures["gates"] == "passed"


def test_regression_evaluation_and_a_champion_of_another_task(ray_local, tmp_path: Path) -> None:
    from raymlops.registry.governance import Governance
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.registry.tags import TASK_TAG
    from raymlops.stages.evaluate import EvaluateStage
    from raymlops.stages.explain import ExplainStage
    from raymlops.tasks.codec import task_to_json
    from raymlops.tasks.multiclass import MulticlassTask

    ctx, state = _pipeline(tmp_path, "regression")
    # The model name's champion is a multiclass version (say, the name was reused): not comparable.
    registry = ModelRegistry.from_config(ctx.cfg.registry)
    run = registry.client.create_run(registry.experiment_id(), run_name="old")
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"not a graph: never read")
    tags = {
        TASK_TAG: task_to_json(MulticlassTask(classes=("a", "b"))),
        "raymlops.input_columns": "num_a:float",
    }
    name = ctx.cfg.registry.model_name
    version = registry.register_version(
        model_name=name, run_id=run.info.run_id, model_files=[graph], tags=tags
    )
    Governance(registry).set_alias(name, "champion", version.version, why="an older model of another task")

    out = EvaluateStage().run(ctx, state).require("evaluate")
    assert {"test/rmse", "test/mae", "test/r2"} <= set(out.metrics)
    # The constant baseline predicts the train mean: R² about 0 and an RMSE of about the target's spread.
    assert abs(out.baseline["test/r2"]) < 0.05 and out.metrics["test/rmse"] < 0.5 * out.baseline["test/rmse"]
    assert out.champion["version"] == version.version and "another task" in out.champion["skipped"]
    assert [g.gate for g in out.gates] == ["test/rmse < baseline"] and out.passed  # no champion gate
    assert ctx.figures["evaluate"]["champion"] == f"v{version.version} not compared (another task)"
    picture = json.loads(out.report_path.read_text())["picture"]
    assert picture["kind"] == "predicted_vs_actual" and picture["rows"] == out.metrics["test/rows"]
    assert np.corrcoef(picture["actual"], picture["predicted"])[0, 1] > 0.9

    # explain: the exported graph (the task's "value" output) explained per request, Tree SHAP globally.
    from raymlops.models.export import export_pipeline
    from raymlops.pipeline.state import ExportOutput

    features = state.require("features")
    onnx_path = tmp_path / "export" / "model.onnx"
    model = state.require("train").model
    export_pipeline(features.preprocessor, model, features.raw_sample, onnx_path, opset=17, tolerance=1e-4)
    columns = dict(features.preprocessor.input_columns)
    explained = ExplainStage().run(ctx, state.with_(export=ExportOutput(onnx_path, columns, 0.0)))
    summary = explained.require("explain").summary
    assert (summary["method"], summary["output_space"], summary["rows"]) == ("tree", "value", 30)
    assert next(iter(summary["mean_abs"])) == "num_a"
    manifest = json.loads((explained.require("explain").explainer_dir / "explainer.json").read_text())
    assert manifest["task"]["task"] == "regression" and manifest["output"] == "value"
