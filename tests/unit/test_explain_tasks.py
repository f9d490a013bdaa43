"""SHAP for every task beyond binary: a small XGBoost per task (plain xgboost, no Ray) exported with its
preprocessing to one ONNX graph; permutation SHAP of the graph and Tree SHAP of the booster, each additive
in the task's space, multiclass with one value per column and class."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from raymlops.data.stats import table_stats
from raymlops.evaluation.explain import OnnxExplainer, load_explainer
from raymlops.evaluation.explanation import GlobalShap, global_shap
from raymlops.evaluation.shap_summary import explain_model
from raymlops.features.preprocess import FittedPreprocessor, fit_preprocessor
from raymlops.models.export import export_pipeline, onnx_feeds
from raymlops.tasks.base import Task
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask
from tests.task_tables import CLASSES, multiclass_strings, regression_numbers

COLUMNS = ("num_a", "num_b", "cat")


def _fitted(kind: str, folder: Path) -> dict[str, Any]:
    import xgboost

    from raymlops.models.xgboost_model import XGBoostModel

    table = multiclass_strings(600) if kind == "multiclass" else regression_numbers(600)
    task: Task = MulticlassTask(classes=CLASSES) if kind == "multiclass" else RegressionTask()
    pre = fit_preprocessor(
        table_stats(table), ["num_a", "num_b"], ["cat"], max_categories=10, min_frequency=1
    )
    y = task.target(table["target"].combine_chunks()).to_numpy()
    params = {"objective": task.xgboost_objective, "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0}
    if kind == "multiclass":
        params["num_class"] = len(CLASSES)
    model = XGBoostModel()
    model.booster_ = xgboost.train(params, xgboost.DMatrix(pre.transform(table), label=y), num_boost_round=20)
    model.num_features_ = pre.num_features
    model.task_ = task
    path = folder / f"{kind}.onnx"
    export_pipeline(pre, model, table.slice(0, 128), path, opset=17, tolerance=1e-4)
    return {"table": table, "task": task, "pre": pre, "model": model, "onnx": path}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict[str, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("tasks")
    return {kind: _fitted(kind, folder) for kind in ("multiclass", "regression")}


def _graph_output(path: Path, task: Task, rows: pa.Table, pre: FittedPreprocessor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([task.output().name], onnx_feeds(rows, pre.input_columns))[0].astype(np.float64)


def test_multiclass_permutation_shap_has_a_value_per_column_and_class(fitted, tmp_path: Path) -> None:
    case = fitted["multiclass"]
    task, pre, table = case["task"], case["pre"], case["table"]
    explainer = OnnxExplainer(
        case["onnx"], pre.input_columns, table.slice(0, 300), max_background=30, task=task
    )
    rows = table.slice(400, 12)
    explanation = explainer.explain(rows)
    assert explanation.values.shape == (12, 3, 3) and explanation.classes == CLASSES
    assert (explanation.method, explanation.output_space) == ("permutation", "probability")
    expected = _graph_output(case["onnx"], task, rows, pre)
    assert expected.shape == (12, 3)
    np.testing.assert_allclose(explanation.predictions, expected, atol=1e-6)
    # Additive per class; each class's base value is its mean probability over the background.
    np.testing.assert_allclose(explanation.values.sum(1) + explanation.base_values, expected, atol=1e-5)
    background = _graph_output(case["onnx"], task, explainer.background, pre)
    np.testing.assert_allclose(explanation.base_values[0], background.mean(axis=0), atol=1e-6)
    # Probabilities sum to one, so each column's values sum to zero over the classes.
    np.testing.assert_allclose(explanation.values.sum(axis=2), 0.0, atol=1e-5)
    record = explanation.records()[0]
    assert set(record["shap"]) == set(CLASSES) and set(record["shap"]["gold"]) == set(COLUMNS)
    assert record["prediction"]["gold"] == pytest.approx(expected[0, 1])
    assert sum(record["base_value"].values()) == pytest.approx(1.0)
    summary = global_shap(explanation)
    assert summary.per_class is not None and set(summary.per_class) == set(CLASSES)
    for column in COLUMNS:  # the summary sums the classes' mean |SHAP|, and says so
        total = sum(summary.per_class[c][column] for c in CLASSES)
        assert summary.mean_abs[column] == pytest.approx(total)
    assert next(iter(summary.mean_abs)) == "num_a"  # the strongest signal in multiclass_strings
    assert summary.to_dict()["aggregation"] == "mean |SHAP| summed over the 3 classes"
    assert GlobalShap.from_dict(json.loads(summary.to_json())) == summary
    # Saved and loaded back: the task travels in explainer.json; the values are the same.
    folder = explainer.save(tmp_path / "explainer")
    manifest = json.loads((folder / "explainer.json").read_text())
    assert manifest["task"] == {"task": "multiclass", "classes": list(CLASSES)}
    assert manifest["output"] == "probabilities"
    loaded = load_explainer(folder, case["onnx"])
    np.testing.assert_array_equal(
        loaded.explain(rows.slice(0, 3)).values, explainer.explain(rows.slice(0, 3)).values
    )


def test_multiclass_tree_shap_is_additive_in_each_class_margin(fitted) -> None:
    import xgboost

    case = fitted["multiclass"]
    pre, model, rows = case["pre"], case["model"], case["table"].slice(300, 80)
    explanation = model.global_explainer(pre).explain(rows)
    assert (explanation.method, explanation.output_space) == ("tree", "margin")
    assert explanation.values.shape == (80, 3, 3) and explanation.base_values.shape == (80, 3)
    features = xgboost.DMatrix(pre.transform(rows))
    margin = model.booster_.predict(features, output_margin=True).astype(np.float64)
    np.testing.assert_allclose(explanation.predictions, margin, atol=1e-5)
    np.testing.assert_allclose(explanation.values.sum(1) + explanation.base_values, margin, atol=1e-4)
    # xgboost's own contributions of class "silver" (index 2), summed over cat's one-hot features.
    contribs = model.booster_.predict(features, pred_contribs=True)  # [rows, classes, features + 1]
    onehot = [j for j, n in enumerate(pre.feature_names) if n.startswith("cat=")]
    np.testing.assert_allclose(explanation.values[:, 2, 2], contribs[:, 2, onehot].sum(1), atol=1e-4)


@pytest.mark.parametrize("method", ["permutation", "tree"])
def test_regression_shap_explains_the_value(fitted, method: str) -> None:
    case = fitted["regression"]
    task, pre, table, model = case["task"], case["pre"], case["table"], case["model"]
    rows = table.slice(450, 15)
    if method == "permutation":
        explainer: Any = OnnxExplainer(
            case["onnx"], pre.input_columns, table.slice(0, 300), max_background=30, task=task
        )
    else:
        explainer = model.global_explainer(pre)
    explanation = explainer.explain(rows)
    assert (explanation.method, explanation.output_space) == (method, "value")
    assert explanation.values.shape == (15, 3) and explanation.classes == ()
    value = model.predict(pre.transform(rows)).astype(np.float64)
    np.testing.assert_allclose(explanation.predictions, value, rtol=1e-5)
    np.testing.assert_allclose(explanation.values.sum(1) + explanation.base_values, value, rtol=1e-5)
    assert 150 < explanation.base_values[0] < 250  # around the target's mean of about 200
    summary = global_shap(explanation)
    assert summary.per_class is None and "aggregation" not in summary.to_dict()
    assert next(iter(summary.mean_abs)) == "num_a"  # 30 * num_a dominates the price


def test_explain_model_summarises_a_multiclass_model(fitted, tmp_path: Path) -> None:
    case = fitted["multiclass"]
    table = case["table"]
    result = explain_model(
        case["model"],
        case["pre"],
        case["onnx"],
        table.slice(0, 300),
        table.slice(300, 40),
        tmp_path,
        background_rows=20,
        explain_rows=40,
        task=case["task"],
    )
    summary = json.loads(result.summary_json.read_text())
    assert (summary["method"], summary["output_space"], summary["rows"]) == ("tree", "margin", 40)
    assert set(summary["per_class"]) == set(CLASSES) and "summed over the 3 classes" in summary["aggregation"]
    png = result.plot_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1024
    loaded = load_explainer(result.explainer_dir, case["onnx"])
    assert loaded.task == case["task"] and loaded.output_space == "probability"
