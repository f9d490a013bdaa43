"""Every model family keeps the contract of raymlops.models.family, in the manner of scikit-learn's
``parametrize_with_checks``: each registered family and one written outside the package
(tests/plugins/external_family.py, named by its dotted path) trains on tiny data on Ray Train, reports
the shared metrics, restores from its checkpoint, predicts, exports a graph that passes the parity check,
gives a Tune search space and explains. The outside family runs the quickstart from config alone in
tests/e2e/test_plugins_quickstart.py."""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from omegaconf import OmegaConf

from raymlops.config import compose
from raymlops.errors import ConfigError, RayMLOpsError
from raymlops.models.family import REPORTED_METRICS, ModelFamily
from raymlops.models.registry import FAMILIES, build_model, family_class, family_parameters

EXTERNAL = "tests.plugins.external_family:LinearFamily"
# Small enough for a few seconds per family on 2 cores; a family without an entry runs its defaults.
QUICK: dict[str, dict[str, Any]] = {
    "torch_mlp": {"hidden_sizes": [8], "epochs": 3, "batch_size": 64, "lr": 0.03},
    "xgboost": {"num_boost_round": 8, "max_depth": 3, "report_every": 4},
    EXTERNAL: {"epochs": 2, "lr": 0.1, "batch_size": 256},
}
FAMILY_REFS = [*FAMILIES, EXTERNAL]
ROWS = 1200


def model_cfg(ref: str) -> Any:
    """A ``model`` config as a YAML of the family would give it: every parameter, the quick ones set."""
    import inspect

    signature = inspect.signature(family_class(ref).__init__)
    defaults = {
        n: p.default for n, p in signature.parameters.items() if p.default is not inspect.Parameter.empty
    }
    return OmegaConf.create({"_target_": ref, **defaults, **QUICK.get(ref, {})})


@pytest.fixture(scope="module")
def table() -> pa.Table:
    """x1 and c drive the label, x2 is noise; a few nulls."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=ROWS), rng.normal(size=ROWS)
    c = rng.choice(["a", "b", "c"], ROWS)
    logit = 2.0 * x1 + np.select([c == "a", c == "b"], [1.5, -1.0], 0.0)
    label = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return pa.table(
        {"x1": x1, "x2": pa.array(x2, mask=rng.random(ROWS) < 0.02), "c": pa.array(c), "label": label}
    )


@pytest.fixture(scope="module")
def pre(table: pa.Table) -> Any:
    from raymlops.data.stats import table_stats
    from raymlops.features.preprocess import fit_preprocessor

    return fit_preprocessor(table_stats(table), ["x1", "x2"], ["c"], max_categories=10, min_frequency=1)


@pytest.fixture(scope="module")
def datasets(ray_local: None, table: pa.Table, pre: Any) -> dict[str, Any]:
    """train / valid as the features stage hands them on: columns x (float32 vector) and y, materialized."""
    import ray.data

    x, y = pre.transform(table), table["label"].to_numpy().astype(np.float32)
    cut = int(ROWS * 0.75)
    return {
        name: ray.data.from_items([{"x": x[i], "y": y[i]} for i in rows]).materialize()
        for name, rows in (("train", range(cut)), ("valid", range(cut, ROWS)))
    }


@pytest.fixture(scope="module", params=FAMILY_REFS)
def fitted(request: pytest.FixtureRequest, datasets: dict[str, Any], pre: Any, tmp_path_factory) -> Any:
    trainer = compose(["+experiment=quickstart", "trainer=single"]).trainer
    trainer.scaling.cpus_per_worker = 0.5  # Ray Data keeps a CPU for its tasks (RAY-NOTES: Train hangs)
    model = build_model(model_cfg(request.param))
    storage = tmp_path_factory.mktemp("ray_train")
    return model.fit(datasets, pre.num_features, trainer, str(storage), 7, preprocessor=pre)


# -- the contract, without training ------------------------------------------------------------------


@pytest.mark.parametrize("ref", FAMILY_REFS)
def test_family_is_a_model_family_whose_constructor_only_stores(ref: str) -> None:
    cls = family_class(ref)
    assert issubclass(cls, ModelFamily) and cls.budget_key in family_parameters(cls)
    model = build_model(model_cfg(ref))
    assert not any(name.endswith("_") for name in vars(model)), "fitted state before fit()"
    assert vars(pickle.loads(pickle.dumps(model))) == vars(model)
    assert cls.reports(OmegaConf.to_container(model_cfg(ref))) >= 1  # type: ignore[arg-type]
    with pytest.raises(RayMLOpsError, match="not fitted"):
        model.predict_proba(np.zeros((1, 3), dtype=np.float32))


@pytest.mark.parametrize("ref", FAMILY_REFS)
def test_family_gives_a_tune_search_space_over_its_parameters(ref: str) -> None:
    from raymlops.training.tune_space import decode_params, max_reports, search_space, space_of, validate_tune

    cfg = model_cfg(ref)
    tune_cfg = compose(["+experiment=quickstart", "+tune=family"]).tune  # space: {} -> the family's own
    validate_tune(tune_cfg, cfg)
    space = space_of(tune_cfg, cfg)
    assert set(space) == set(family_class(ref).search_space) and space
    domains = search_space(space, cfg)
    sampled = decode_params({name: domain.sample() for name, domain in domains.items()}, space)
    assert isinstance(build_model(cfg, **sampled), family_class(ref))  # a trial's model builds
    assert max_reports(cfg, space) >= 1


@pytest.mark.parametrize("ref", FAMILY_REFS)
def test_unknown_parameter_is_a_config_error_naming_it(ref: str) -> None:
    name = family_class(ref).budget_key
    with pytest.raises(ConfigError) as info:
        build_model(model_cfg(ref), **{name + "s": 1})
    assert info.value.key == f"model.{name}s" and f"Did you mean '{name}'?" in str(info.value)


def test_unknown_family_names_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match="Did you mean 'xgboost'") as info:
        family_class("xgbost")
    assert info.value.key == "model._target_"
    with pytest.raises(ConfigError, match="not a model family"):
        family_class("raymlops.models.export:compose_pipeline")


# -- trained on Ray Train --------------------------------------------------------------------------------


def test_fits_on_ray_train_and_reports_the_shared_metrics(fitted: Any) -> None:
    history = fitted.history_
    assert history and set(REPORTED_METRICS) <= set(history[-1])
    assert all(math.isfinite(history[-1][name]) for name in REPORTED_METRICS)
    params = {name: getattr(fitted, name) for name in family_parameters(type(fitted))}
    assert len(history) <= type(fitted).reports(params)  # ASHA's max_t is never short
    assert Path(fitted.checkpoint_path_).is_dir()


def test_checkpoint_restores_the_same_predictions(fitted: Any, table: pa.Table, pre: Any) -> None:
    import ray.train

    x = pre.transform(table.slice(0, 200))
    restored = type(fitted)(**{name: getattr(fitted, name) for name in family_parameters(type(fitted))})
    restored.load_checkpoint(ray.train.Checkpoint(fitted.checkpoint_path_), pre.num_features)
    np.testing.assert_allclose(restored.predict_proba(x), fitted.predict_proba(x), atol=1e-6)


def test_predicts_probabilities_that_rank_the_labels(fitted: Any, table: pa.Table, pre: Any) -> None:
    from sklearn.metrics import roc_auc_score

    proba = np.asarray(fitted.predict_proba(pre.transform(table)))
    assert proba.shape == (ROWS,) and np.all((proba >= 0) & (proba <= 1))
    assert roc_auc_score(table["label"].to_numpy(), proba) > 0.7


def test_exports_a_graph_that_passes_the_parity_check(
    fitted: Any, table: pa.Table, pre: Any, tmp_path: Path
) -> None:
    from raymlops.models.export import export_pipeline, predict_onnx

    path = tmp_path / "model.onnx"
    diff = export_pipeline(pre, fitted, table.slice(0, 256), path, opset=17, tolerance=1e-4)
    assert diff <= 1e-4
    rows = table.slice(256, 300)
    onnx_proba = predict_onnx(path, rows, pre.input_columns)
    np.testing.assert_allclose(onnx_proba, fitted.predict_proba(pre.transform(rows)), atol=1e-4)


def test_explains_over_the_raw_columns(fitted: Any, table: pa.Table, pre: Any, tmp_path: Path) -> None:
    from raymlops.evaluation.explain import load_explainer
    from raymlops.evaluation.shap_summary import explain_model
    from raymlops.models.export import export_pipeline

    onnx_path = tmp_path / "model.onnx"
    export_pipeline(pre, fitted, table.slice(0, 256), onnx_path, opset=17, tolerance=1e-4)
    result = explain_model(
        fitted,
        pre,
        onnx_path,
        table.slice(0, 600),
        table.slice(600),
        tmp_path,
        background_rows=20,
        explain_rows=20,
    )
    exact = fitted.global_explainer(pre)
    assert result.summary.method == ("permutation" if exact is None else exact.method)
    assert set(result.summary.mean_abs) == {"x1", "x2", "c"} and result.summary.rows == 20
    assert load_explainer(result.explainer_dir, onnx_path).columns == ("x1", "x2", "c")
    if exact is not None:  # the family's own explainer is additive in its output space
        explanation = exact.explain(table.slice(0, 50))
        np.testing.assert_allclose(
            explanation.values.sum(1) + explanation.base_values, explanation.predictions, atol=1e-4
        )
