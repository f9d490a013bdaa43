"""SHAP over raw input columns: real shap, onnxruntime, a tiny XGBoost and a tiny torch MLP (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest
import shap  # noqa: F401  (imported at collection: the warm-up test below then times only numba's compile)

from raymlops.data.stats import table_stats
from raymlops.errors import RequestError
from raymlops.evaluation.explain import OnnxExplainer, load_explainer, warm_up
from raymlops.evaluation.explanation import global_shap
from raymlops.evaluation.raw_codec import RawFeatureCodec
from raymlops.evaluation.shap_summary import explain_model
from raymlops.evaluation.tree_shap import TreeShap
from raymlops.features.preprocess import FittedPreprocessor, fit_preprocessor
from raymlops.models.export import PROBABILITY_OUTPUT, export_pipeline, onnx_feeds

ROWS = 2000


def test_warm_up_compiles_shap_once_per_process() -> None:
    """First in the file: the ~10 s numba compile lands here, not in a test that times explanations."""
    first = warm_up()
    assert first >= 0.0 and warm_up() == 0.0
    print(f"\nshap permutation warm-up (numba compile): {first:.1f} s")


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """x1 and c drive the label, x2 is pure noise; a few nulls in x2 and c."""
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=ROWS)
    x2 = rng.normal(size=ROWS)
    c = rng.choice(["a", "b", "c"], ROWS)
    logit = 2.0 * x1 + np.select([c == "a", c == "b"], [1.5, -1.0], 0.0)
    label = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return pa.table(
        {
            "x1": x1,
            "x2": pa.array(x2, mask=rng.random(ROWS) < 0.02),
            "c": pa.array(c, mask=rng.random(ROWS) < 0.02),
            "label": label,
        }
    )


@pytest.fixture(scope="module")
def pre(table: pa.Table) -> FittedPreprocessor:
    return fit_preprocessor(table_stats(table), ["x1", "x2"], ["c"], max_categories=10, min_frequency=1)


@pytest.fixture(scope="module")
def xgb_model(table: pa.Table, pre: FittedPreprocessor):
    import xgboost

    from raymlops.models.xgboost_model import XGBoostModel

    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0}
    dtrain = xgboost.DMatrix(pre.transform(table), label=table["label"].to_numpy())
    model = XGBoostModel()
    model.booster_ = xgboost.train(params, dtrain, num_boost_round=30)
    model.num_features_ = pre.num_features
    return model


@pytest.fixture(scope="module")
def mlp_model(table: pa.Table, pre: FittedPreprocessor):
    import torch

    from raymlops.models.torch_mlp import TorchMLP, build_mlp

    torch.manual_seed(0)
    module = build_mlp(pre.num_features, [16], 0.0)
    x = torch.from_numpy(pre.transform(table))
    y = torch.from_numpy(np.array(table["label"].to_numpy(), dtype=np.float32))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.03)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(150):
        optimizer.zero_grad()
        loss_fn(module(x).squeeze(1), y).backward()
        optimizer.step()
    model = TorchMLP([16], dropout=0.0)
    model.module_ = module.eval()
    model.num_features_ = pre.num_features
    return model


@pytest.fixture(scope="module")
def onnx_paths(tmp_path_factory, table, pre, xgb_model, mlp_model) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, model in (("xgboost", xgb_model), ("mlp", mlp_model)):
        paths[name] = folder / f"{name}.onnx"
        export_pipeline(pre, model, table.slice(0, 256), paths[name], opset=17, tolerance=1e-4)
    return paths


def onnx_probability(path: Path, rows: pa.Table, pre: FittedPreprocessor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([PROBABILITY_OUTPUT], onnx_feeds(rows, pre.input_columns))[0].astype(np.float64)


def test_codec_round_trips_to_the_same_onnx_feeds(table: pa.Table, pre: FittedPreprocessor) -> None:
    codec = RawFeatureCodec.fit(pre.input_columns, table)
    assert codec.vocabularies == {"c": ("", "a", "b", "c")}  # null -> ''
    codes = codec.encode(table)
    assert codes.dtype == np.float64 and codes.shape == (ROWS, 3)
    assert np.isnan(codes[:, 1]).sum() == table["x2"].null_count
    decoded, expected = codec.decode(codes), onnx_feeds(table, pre.input_columns)
    np.testing.assert_array_equal(decoded["x1"], expected["x1"])
    np.testing.assert_array_equal(decoded["x2"], expected["x2"])  # NaN == NaN here
    assert decoded["c"].tolist() == expected["c"].tolist()
    assert RawFeatureCodec.from_dict(json.loads(json.dumps(codec.to_dict()))) == codec
    # New values are appended, so codes already handed out keep their meaning.
    request = pa.table(
        {"x1": [0.0], "x2": [None], "c": ["zzz"]}, schema=table.select(["x1", "x2", "c"]).schema
    )
    extended = codec.extend(request)
    assert extended.vocabularies["c"] == ("", "a", "b", "c", "zzz")
    np.testing.assert_array_equal(extended.encode(table), codes)
    with pytest.raises(RequestError, match="zzz"):
        codec.encode(request)


@pytest.mark.parametrize("family", ["mlp", "xgboost"])
def test_permutation_shap_is_additive_on_the_onnx_graph(
    family: str, table: pa.Table, pre: FittedPreprocessor, onnx_paths: dict[str, Path]
) -> None:
    explainer = OnnxExplainer(onnx_paths[family], pre.input_columns, table.slice(0, 500), seed=1)
    assert explainer.background.num_rows == 100  # sampled down to the default bound
    rows = table.slice(1000, 100)
    explanation = explainer.explain(rows)
    assert explanation.values.shape == (100, 3) and explanation.columns == ("x1", "x2", "c")
    assert (explanation.method, explanation.output_space) == ("permutation", "probability")
    expected = onnx_probability(onnx_paths[family], rows, pre)
    np.testing.assert_allclose(explanation.predictions, expected, atol=1e-6)
    np.testing.assert_allclose(explanation.values.sum(1) + explanation.base_values, expected, atol=1e-5)
    # The base value is the mean probability over the background.
    background = onnx_probability(onnx_paths[family], explainer.background, pre)
    np.testing.assert_allclose(explanation.base_values, background.mean(), atol=1e-6)
    summary = global_shap(explanation)
    assert set(summary.mean_abs) == {"x1", "x2", "c"}  # raw columns, not c=a ...
    assert next(iter(summary.mean_abs)) == "x1" and summary.mean_abs["x1"] > 3 * summary.mean_abs["x2"]
    assert summary.mean_abs["c"] > summary.mean_abs["x2"]
    assert summary.rows == 100 and summary.seconds > 0
    record = explanation.records()[0]
    assert set(record["shap"]) == {"x1", "x2", "c"}
    assert record["prediction"] == pytest.approx(expected[0])


def test_permutation_shap_explains_values_not_in_the_background(
    table: pa.Table, pre: FittedPreprocessor, onnx_paths: dict[str, Path]
) -> None:
    explainer = OnnxExplainer(onnx_paths["mlp"], pre.input_columns, table.slice(0, 50))
    rows = pa.table(
        {"x1": [0.5, None], "x2": [1.0, -1.0], "c": ["never-seen", None], "extra": [1, 2]},
        schema=pa.schema(
            [("x1", pa.float64()), ("x2", pa.float64()), ("c", pa.string()), ("extra", pa.int64())]
        ),
    )
    explanation = explainer.explain(rows)
    expected = onnx_probability(onnx_paths["mlp"], rows, pre)
    np.testing.assert_allclose(explanation.values.sum(1) + explanation.base_values, expected, atol=1e-5)
    assert "never-seen" not in explainer.codec.vocabularies["c"]  # the explainer itself is unchanged


def test_tree_shap_is_additive_in_log_odds_and_sums_one_hot_columns(
    table: pa.Table, pre: FittedPreprocessor, xgb_model, mlp_model
) -> None:
    import xgboost

    rows = table.slice(1000, 200)
    explanation = xgb_model.global_explainer(pre).explain(rows)
    # The family says how it is explained: XGBoost by exact Tree SHAP, the MLP by permutation of its graph.
    assert isinstance(xgb_model.global_explainer(pre), TreeShap) and mlp_model.global_explainer(pre) is None
    assert (explanation.method, explanation.output_space) == ("tree", "log_odds")
    features = xgboost.DMatrix(pre.transform(rows))
    margin = xgb_model.booster_.predict(features, output_margin=True).astype(np.float64)
    np.testing.assert_allclose(explanation.predictions, margin, atol=1e-6)
    np.testing.assert_allclose(explanation.values.sum(1) + explanation.base_values, margin, atol=1e-4)
    # xgboost's own Tree SHAP, summed over c's one-hot features, gives the same raw-column values.
    contribs = xgb_model.booster_.predict(features, pred_contribs=True)
    names = pre.feature_names
    onehot = [j for j, n in enumerate(names) if n.startswith("c=")]
    assert len(onehot) == 3  # a, b, c: a null c is all zeros
    np.testing.assert_allclose(explanation.values[:, 0], contribs[:, names.index("x1")], atol=1e-4)
    np.testing.assert_allclose(explanation.values[:, 2], contribs[:, onehot].sum(1), atol=1e-4)
    summary = global_shap(explanation)
    assert list(summary.mean_abs) == ["x1", "c", "x2"]
    assert summary.mean_abs["x1"] > 3 * summary.mean_abs["x2"]


def test_saved_explainer_loads_and_gives_the_same_values(
    tmp_path: Path, table: pa.Table, pre: FittedPreprocessor, onnx_paths: dict[str, Path]
) -> None:
    explainer = OnnxExplainer(onnx_paths["mlp"], pre.input_columns, table.slice(0, 300), max_background=40)
    folder = explainer.save(tmp_path / "explainer")
    assert sorted(p.name for p in folder.iterdir()) == ["background.parquet", "explainer.json"]
    manifest = json.loads((folder / "explainer.json").read_text())
    assert manifest["kind"] == "permutation" and manifest["output_space"] == "probability"
    assert manifest["input_columns"] == {"x1": "float", "x2": "float", "c": "string"}
    assert manifest["background_rows"] == 40
    loaded = load_explainer(folder, onnx_paths["mlp"])
    assert loaded.codec == explainer.codec and loaded.max_evals == explainer.max_evals
    rows = table.slice(1500, 20)
    np.testing.assert_array_equal(loaded.explain(rows).values, explainer.explain(rows).values)


@pytest.mark.parametrize("family", ["mlp", "xgboost"])
def test_explain_model_writes_summary_plot_and_explainer(
    family: str, tmp_path: Path, table: pa.Table, pre: FittedPreprocessor, onnx_paths, xgb_model, mlp_model
) -> None:
    model = {"mlp": mlp_model, "xgboost": xgb_model}[family]
    result = explain_model(
        model, pre, onnx_paths[family], table.slice(0, 1000), table.slice(1000), tmp_path, seed=3
    )
    method, space = ("tree", "log_odds") if family == "xgboost" else ("permutation", "probability")
    summary = json.loads(result.summary_json.read_text())
    assert result.summary_json == tmp_path / "shap_summary.json"
    assert (summary["method"], summary["output_space"], summary["rows"]) == (method, space, 100)
    assert next(iter(summary["mean_abs"])) == "x1" and set(summary["mean_abs"]) == {"x1", "x2", "c"}
    assert summary["seconds"] == result.summary.seconds > 0
    png = result.plot_png.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1024
    assert load_explainer(result.explainer_dir, onnx_paths[family]).background.num_rows == 100
    print(f"\n{family}: {method} SHAP of {summary['rows']} rows took {result.summary.seconds:.3f} s")


def test_missing_column_or_no_rows_is_a_request_error(
    tmp_path: Path, table: pa.Table, pre: FittedPreprocessor, onnx_paths: dict[str, Path], xgb_model
) -> None:
    explainer = OnnxExplainer(onnx_paths["mlp"], pre.input_columns, table.slice(0, 20))
    with pytest.raises(RequestError, match=r"missing input column\(s\): x2"):
        explainer.explain(table.drop_columns(["x2"]))
    with pytest.raises(RequestError, match="no rows"):
        explainer.explain(table.slice(0, 0))
    with pytest.raises(RequestError, match="c"):
        TreeShap(xgb_model.booster_, pre).explain(table.drop_columns(["c"]))
    with pytest.raises(RequestError, match="x1"):
        explain_model(xgb_model, pre, onnx_paths["xgboost"], table.drop_columns(["x1"]), table, tmp_path)
