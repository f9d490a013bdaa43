"""Every model family keeps the contract of raymlops.models.family for every task, in the manner of
scikit-learn's ``parametrize_with_checks``: each registered family and one written outside the package
(tests/plugins/external_family.py, named by its dotted path) trains on tiny data on Ray Train once per task
(binary, multiclass, regression), reports the task's metrics, restores from its checkpoint, predicts in the
pred convention ([N], or [N, K] for K classes) better than the task's constant baseline, exports a graph
whose output is the task's and passes the parity check, gives a Tune search space and explains. Tune's
``auto`` metric searches a regression task by valid/rmse. The outside family runs the quickstart from config
alone in tests/e2e/test_plugins_quickstart.py."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from omegaconf import OmegaConf

from raymlops.config import compose
from raymlops.errors import ConfigError, RayMLOpsError
from raymlops.models.family import ModelFamily, reported_metrics
from raymlops.models.registry import FAMILIES, build_model, family_class, family_parameters
from raymlops.tasks.base import Task
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask
from raymlops.training.placement_groups import actor_created_groups
from tests.task_tables import CLASSES, multiclass_strings, regression_numbers

EXTERNAL = "tests.plugins.external_family:LinearFamily"
# Small enough for a few seconds per family on 2 cores; a family without an entry runs its defaults.
QUICK: dict[str, dict[str, Any]] = {
    "torch_mlp": {"hidden_sizes": [8], "epochs": 3, "batch_size": 64, "lr": 0.03},
    "xgboost": {"num_boost_round": 8, "max_depth": 3, "report_every": 4},
    EXTERNAL: {"epochs": 3, "lr": 0.1, "batch_size": 128},
}
FAMILY_REFS = [*FAMILIES, EXTERNAL]
TASKS = ("binary", "multiclass", "regression")
ROWS = 1200
CUT = int(ROWS * 0.75)  # train rows; the rest are valid


def model_cfg(ref: str) -> Any:
    """A ``model`` config as a YAML of the family would give it: every parameter, the quick ones set."""
    import inspect

    signature = inspect.signature(family_class(ref).__init__)
    defaults = {
        n: p.default for n, p in signature.parameters.items() if p.default is not inspect.Parameter.empty
    }
    return OmegaConf.create({"_target_": ref, **defaults, **QUICK.get(ref, {})})


def binary_table() -> pa.Table:
    """x1 and c drive the label, x2 is noise; a few nulls. Labels 0/1: the legacy (flights) binary task."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=ROWS), rng.normal(size=ROWS)
    c = rng.choice(["a", "b", "c"], ROWS)
    logit = 2.0 * x1 + np.select([c == "a", c == "b"], [1.5, -1.0], 0.0)
    label = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    return pa.table(
        {"x1": x1, "x2": pa.array(x2, mask=rng.random(ROWS) < 0.02), "c": pa.array(c), "label": label}
    )


@dataclass(frozen=True)
class TaskData:
    """One task's tiny problem: raw rows, their targets, the fitted preprocessing, train/valid datasets."""

    task: Task | None  # None: fit without a task, as every caller did before tasks (binary)
    table: pa.Table  # raw columns (what the graph takes)
    y: np.ndarray  # targets, float32
    pre: Any
    datasets: dict[str, Any]

    @property
    def resolved(self) -> Task:
        from raymlops.models.family import resolve_task

        return resolve_task(self.task)


def _task_data(name: str) -> TaskData:
    import ray.data

    from raymlops.data.stats import table_stats
    from raymlops.features.preprocess import fit_preprocessor

    task: Task | None
    if name == "binary":
        task, table = None, binary_table()
        y, numeric, categorical = table["label"].to_numpy().astype(np.float32), ["x1", "x2"], ["c"]
    else:
        task = MulticlassTask(classes=CLASSES) if name == "multiclass" else RegressionTask()
        raw = multiclass_strings(ROWS, seed=1) if name == "multiclass" else regression_numbers(ROWS, seed=1)
        table, numeric, categorical = raw.drop_columns(["target"]), ["num_a", "num_b"], ["cat"]
        y = task.target(raw["target"].combine_chunks()).to_numpy().astype(np.float32)
    stats = table_stats(table)
    pre = fit_preprocessor(stats, numeric, categorical, max_categories=10, min_frequency=1)
    x = pre.transform(table)
    datasets = {
        split: ray.data.from_items([{"x": x[i], "y": y[i]} for i in rows]).materialize()
        for split, rows in (("train", range(CUT)), ("valid", range(CUT, ROWS)))
    }
    return TaskData(task, table, y, pre, datasets)


@pytest.fixture(scope="module")
def task_data(ray_local: None) -> dict[str, TaskData]:
    """Every task's problem, as the features stage hands it on: columns x (float32 vector) and y."""
    return {name: _task_data(name) for name in TASKS}


@dataclass(frozen=True)
class Case:
    name: str  # "<task>-<family>"
    data: TaskData
    fitted: Any


CASES = [(task, ref) for task in TASKS for ref in FAMILY_REFS]


# One Ray Train fit per task and family for the whole module: the served check below reuses them.
FITTED: dict[tuple[str, str], Case] = {}


def _fitted(task_name: str, ref: str, data: TaskData, tmp_path_factory: pytest.TempPathFactory) -> Case:
    if (task_name, ref) not in FITTED:
        trainer = compose(["+experiment=quickstart", "trainer=single"]).trainer
        trainer.scaling.cpus_per_worker = 0.5  # Ray Data keeps a CPU for its tasks (RAY-NOTES: Train hangs)
        model = build_model(model_cfg(ref))
        storage = tmp_path_factory.mktemp("ray_train")
        fitted = model.fit(
            data.datasets,
            data.pre.num_features,
            trainer,
            str(storage),
            7,
            preprocessor=data.pre,
            task=data.task,
        )
        FITTED[task_name, ref] = Case(f"{task_name}-{ref}", data, fitted)
    return FITTED[task_name, ref]


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{r.rsplit(':', 1)[-1]}" for t, r in CASES])
def case(request: pytest.FixtureRequest, task_data: dict[str, TaskData], tmp_path_factory) -> Case:
    """One Ray Train fit per task and family, shared by every check of it."""
    task_name, ref = request.param
    return _fitted(task_name, ref, task_data[task_name], tmp_path_factory)


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
        model.predict(np.zeros((1, 3), dtype=np.float32))


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


# -- trained on Ray Train, once per task and family -----------------------------------------------------


def test_fits_on_ray_train_and_reports_the_tasks_metrics(case: Case) -> None:
    fitted, task = case.fitted, case.data.resolved
    assert fitted.task_ == task
    history = fitted.history_
    names = reported_metrics(task)
    assert names[1] == f"valid/{task.primary_metric}"
    assert history and set(names) <= set(history[-1])
    assert all(math.isfinite(history[-1][name]) for name in names)
    params = {name: getattr(fitted, name) for name in family_parameters(type(fitted))}
    assert len(history) <= type(fitted).reports(params)  # ASHA's max_t is never short
    assert Path(fitted.checkpoint_path_).is_dir()


def test_checkpoint_restores_the_same_predictions(case: Case) -> None:
    import ray.train

    fitted, data = case.fitted, case.data
    x = data.pre.transform(data.table.slice(0, 200))
    restored = type(fitted)(**{name: getattr(fitted, name) for name in family_parameters(type(fitted))})
    restored.load_checkpoint(ray.train.Checkpoint(fitted.checkpoint_path_), data.pre.num_features, data.task)
    np.testing.assert_allclose(restored.predict(x), fitted.predict(x), rtol=1e-6, atol=1e-6)


def test_predicts_in_the_pred_convention_and_beats_the_constant_baseline(case: Case) -> None:
    data, task = case.data, case.data.resolved
    pred = case.fitted.predict(data.pre.transform(data.table))
    width = task.output().width
    assert pred.dtype == np.float32 and pred.shape == ((ROWS,) if width == 1 else (ROWS, width))
    valid, primary = slice(CUT, ROWS), f"valid/{task.primary_metric}"
    ours = task.metrics(data.y[valid], pred[valid], "valid")[primary]
    baseline = task.baseline_metrics(data.y[:CUT], data.y[valid], "valid")[primary]
    # Clearly better than the constant: AUC / macro-F1 by 0.15, an error 30% lower.
    if task.higher_is_better(primary):
        assert ours >= baseline + 0.15, (case.name, ours, baseline)
    else:
        assert ours <= 0.7 * baseline, (case.name, ours, baseline)


def test_exports_a_graph_of_the_tasks_output_that_passes_the_parity_check(case: Case, tmp_path: Path) -> None:
    import onnx

    from raymlops.models.export import export_pipeline, predict_onnx

    data, task = case.data, case.data.resolved
    path = tmp_path / "model.onnx"
    diff = export_pipeline(data.pre, case.fitted, data.table.slice(0, 256), path, opset=17, tolerance=1e-4)
    assert diff <= 1e-4
    assert [o.name for o in onnx.load(str(path)).graph.output] == [task.output().name]
    rows = data.table.slice(256, 300)
    onnx_pred = predict_onnx(path, rows, data.pre.input_columns, output=task.output().name)
    python_pred = case.fitted.predict(data.pre.transform(rows))
    assert onnx_pred.shape == python_pred.shape
    np.testing.assert_allclose(onnx_pred, python_pred, rtol=1e-5, atol=1e-4)


def test_explains_over_the_raw_columns(case: Case, tmp_path: Path) -> None:
    from raymlops.evaluation.explain import load_explainer
    from raymlops.evaluation.shap_summary import explain_model
    from raymlops.models.export import export_pipeline

    data, fitted = case.data, case.fitted
    table, pre = data.table, data.pre
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
        task=data.task,
    )
    exact = fitted.global_explainer(pre)
    columns = tuple(pre.input_columns)
    assert result.summary.method == ("permutation" if exact is None else exact.method)
    assert set(result.summary.mean_abs) == set(columns) and result.summary.rows == 20
    assert set(load_explainer(result.explainer_dir, onnx_path).columns) == set(columns)
    if exact is not None:  # the family's own explainer is additive in its output space (per class: [N, K])
        explanation = exact.explain(table.slice(0, 50))
        np.testing.assert_allclose(
            explanation.values.sum(1) + explanation.base_values, explanation.predictions, atol=1e-4
        )


# -- Tune over a task: tune.metric auto is the task's metric ---------------------------------------------


def test_tune_searches_a_regression_task_by_its_rmse_with_asha(
    task_data: dict[str, TaskData], tmp_path: Path
) -> None:
    from raymlops.training.tune import tune_model

    data = task_data["regression"]
    cfg = compose(
        [
            "+experiment=quickstart_xgb",
            "+tune=optuna_xgb",
            "trainer=single",
            "model.num_boost_round=6",
            "model.max_depth=3",
            "model.report_every=3",
            "tune.num_samples=2",
            "tune.scheduler.grace_period=2",
        ]
    )
    assert cfg.tune.metric == "auto"
    search, model = tune_model(
        cfg,
        data.datasets,
        data.pre.num_features,
        tune_path=str(tmp_path / "tune"),
        train_path=str(tmp_path / "train"),
        name="regression",
        task=data.task,
    )
    assert search.metric == "valid/rmse" and len(search.trials) == 2
    finals = [t["metrics"]["valid/rmse"] for t in search.trials if t["error"] is None]
    assert search.best_metric == min(finals)  # rmse: lower is better
    assert model.task_ == data.task and model.predict(data.pre.transform(data.table)).shape == (ROWS,)
    # ASHA stops a trial at max_t too, while its Ray Train run is still ending: none keeps its CPUs.
    assert actor_created_groups() == {}


# -- served: every task x family from one app, over v1 and OIP v2, with feedback and live metrics -------


@dataclass(frozen=True)
class ServedCase:
    name: str  # the served model name: "<task>-<family>"
    case: Case
    onnx_path: Path


def _served_name(task_name: str, ref: str) -> str:
    return f"{task_name}-{ref.rsplit(':', 1)[-1].rsplit('.', 1)[-1].lower()}"


def _records(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as a client sends them: JSON, NaN as null."""
    return [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in table.to_pylist()
    ]


@pytest.fixture(scope="module")
def served(ray_local: None, task_data: dict[str, TaskData], tmp_path_factory: pytest.TempPathFactory):
    """Every fitted task x family exported (parity checked) and served by one router app, with the
    prediction log on; Serve shut down afterwards."""
    from ray import serve

    from raymlops.models.export import export_pipeline
    from raymlops.serving import ModelSpec, deploy
    from tests.conftest import free_port

    folder = tmp_path_factory.mktemp("served-families")
    cases, specs = {}, []
    for task_name, ref in CASES:
        case = _fitted(task_name, ref, task_data[task_name], tmp_path_factory)
        name = _served_name(task_name, ref)
        path = folder / name / "model.onnx"
        data = case.data
        export_pipeline(data.pre, case.fitted, data.table.slice(0, 256), path, opset=17, tolerance=1e-4)
        cases[name] = ServedCase(name, case, path)
        specs.append(
            ModelSpec(
                name=name,
                version="1",
                onnx_path=str(path),
                data_version="conformance",
                input_columns=data.pre.input_columns,
                task=data.resolved.describe(),
            )
        )
    log_root = folder / "predlog"
    port = free_port()
    try:
        url = deploy(
            specs,
            app_name="families-served",
            host="127.0.0.1",
            port=port,
            timeout_s=120,
            prediction_log={"root": str(log_root), "flush_rows": 1, "flush_interval_s": 0.2},
        )
        yield {"url": url, "port": port, "cases": cases, "log_root": log_root}
    finally:
        serve.shutdown()


def _outcome(task: Task, target: float) -> Any:
    """A feedback outcome in the label's own terms: the class value, 0 / 1, or the number."""
    classes = task.describe().get("classes")
    if classes is not None:
        return classes[int(target)]
    return int(target) if task.name == "binary" else float(target)


def test_every_task_and_family_answers_v1_and_oip_v2_takes_feedback_and_yields_live_metrics(
    served: dict[str, Any],
) -> None:
    import time

    import httpx
    import tritonclient.http as triton

    from raymlops.models.export import predict_onnx
    from raymlops.monitoring.feedback import feedback_targets, outcome_values
    from raymlops.monitoring.prediction_log import log_pred, read_feedback, read_predictions
    from raymlops.monitoring.window_stats import window_partials

    url, rows = served["url"], slice(CUT, CUT + 40)  # valid rows: not trained on
    client = triton.InferenceServerClient(f"127.0.0.1:{served['port']}")
    sent: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, item in served["cases"].items():
        data, task = item.case.data, item.case.data.resolved
        table, output = data.table.slice(rows.start, rows.stop - rows.start), task.output()
        expected = predict_onnx(item.onnx_path, table, data.pre.input_columns, output=output.name)

        # v1: the task's answer fields, from the graph's output
        response = httpx.post(
            f"{url}/v1/models/{name}/predict", json={"records": _records(table)}, timeout=60
        )
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        want = task.answers(expected, 0.5)
        got = body["predictions"]
        assert [set(a) for a in got] == [set(a) for a in want], name
        for answer, wanted in zip(got, want, strict=True):
            for key, value in wanted.items():
                if isinstance(value, (float, dict)):
                    assert answer[key] == pytest.approx(value, rel=1e-5, abs=1e-6), (name, key)
                else:
                    assert answer[key] == value, (name, key)

        # OIP v2 through tritonclient: the task's output, its shape, the same numbers
        meta = client.get_model_metadata(name)
        assert [o["name"] for o in meta["outputs"]] == [output.name], name
        inputs = []
        for column, kind in data.pre.input_columns.items():
            values = table[column].to_pylist()
            if kind == "float":
                array = np.asarray([math.nan if v is None else v for v in values], np.float32)
                tensor = triton.InferInput(column, [len(values), 1], "FP32")
            else:
                array = np.asarray([(v or "").encode() for v in values], dtype=object)
                tensor = triton.InferInput(column, [len(values), 1], "BYTES")
            inputs.append(tensor.set_data_from_numpy(array.reshape(-1, 1)))
        result = client.infer(name, inputs, outputs=[triton.InferRequestedOutput(output.name)])
        np.testing.assert_allclose(result.as_numpy(output.name), expected, rtol=1e-5, atol=1e-6)

        # feedback in the label's own terms for the v1 answers
        targets = data.y[rows]
        items = [
            {"prediction_id": body["prediction_id"], "row": i, "outcome": _outcome(task, t), "model": name}
            for i, t in enumerate(targets)
        ]
        feedback = httpx.post(f"{url}/v1/feedback", json={"feedback": items}, timeout=60)
        assert feedback.status_code == 200 and feedback.json() == {"accepted": len(items)}, feedback.text
        sent[name] = (targets, expected)

    # Live metrics: the monitor's own path (log rows joined to feedback) equals the task's metrics of the
    # answers sent against the outcomes given.
    deadline = time.monotonic() + 60
    for name, (targets, expected) in sent.items():
        task = served["cases"][name].case.data.resolved
        while True:
            partial = window_partials(
                read_predictions(served["log_root"], name), read_feedback(served["log_root"], name)
            ).get("1")
            labelled = partial.labelled if partial is not None else None
            if (labelled is not None and labelled.num_rows >= len(targets)) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert labelled is not None and labelled.num_rows >= len(targets), name
        live_targets, unknown = feedback_targets(task, outcome_values(labelled))
        assert not unknown, (name, unknown)
        live = task.metrics(live_targets, log_pred(labelled, task), "live")
        wanted = task.metrics(targets, expected, "live")
        for metric in task.live_metrics():
            assert live[f"live/{metric}"] == pytest.approx(wanted[f"live/{metric}"], rel=1e-4, abs=1e-5), (
                name,
                metric,
            )
