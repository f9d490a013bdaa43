"""Quality of the shipped non-flights experiments: distributed training and the ONNX graph cost no quality.

Each experiment (penguins: multiclass, stratified split; diabetes: regression, random split) runs the job's
stages ingest..export with its own config and the XGBoost family on Ray Train (2 workers). Its test
metric is scored through the exported ONNX graph on the raw test rows, as serving scores them. Plain
single-process ``xgboost`` (``XGBClassifier`` / ``XGBRegressor``) then trains on the same preprocessed
train features and targets (the job's own split rows, after its fitted preprocessing), with the same
parameters and number of rounds, and is scored on the same test rows.

"Within 3%" is relative, on the task's primary metric (macro_f1 for multiclass, higher is better; rmse
for regression, lower is better), and one-sided (the job may not be worse): the job's value is at least
0.97 x plain xgboost's when higher is better, at most 1.03 x when lower is better.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raymlops.config import compose
from raymlops.models.export import predict_onnx
from raymlops.pipeline.runner import run_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

TOLERANCE = 0.03
STAGES = "stages=[ingest,validate,features,train,evaluate,export]"


def _numpy(ds) -> tuple[np.ndarray, np.ndarray]:  # ds: the features stage's {x, y} Ray Dataset
    rows = ds.take_all()
    return np.stack([r["x"] for r in rows]).astype(np.float32), np.array([r["y"] for r in rows])


def _plain_xgboost(cfg, task, x_train, y_train, x_test) -> np.ndarray:
    """Single-process xgboost with the family's parameters; predictions in the job's convention."""
    import xgboost

    params = {
        "n_estimators": cfg.model.num_boost_round,
        "max_depth": cfg.model.max_depth,
        "learning_rate": cfg.model.eta,
        "subsample": cfg.model.subsample,
        "colsample_bytree": cfg.model.colsample_bytree,
        "min_child_weight": cfg.model.min_child_weight,
        "tree_method": "hist",
        "random_state": cfg.seed,
        "n_jobs": 2,
    }
    width = task.output().width
    if task.xgboost_objective.startswith("reg:"):
        return (
            xgboost.XGBRegressor(objective=task.xgboost_objective, **params)
            .fit(x_train, y_train)
            .predict(x_test)
        )
    model = xgboost.XGBClassifier(objective=task.xgboost_objective, **params).fit(
        x_train, y_train.astype(int)
    )
    proba = model.predict_proba(x_test)
    return proba if width > 1 else proba[:, 1]


@pytest.mark.parametrize(
    ("experiment", "task_name"), [("penguins", "multiclass"), ("diabetes", "regression")]
)
def test_the_xgboost_family_is_within_3_percent_of_plain_xgboost(
    tmp_path: Path, experiment: str, task_name: str
) -> None:
    cfg = compose([f"+experiment={experiment}", f"state_dir={tmp_path}", "ray.progress_bars=false", STAGES])
    assert cfg.model._target_.endswith("XGBoostModel") and cfg.model.early_stopping_rounds is None
    ctx, state = run_pipeline(cfg)
    features = state.require("features")
    task = features.task
    assert task.name == task_name and features.split_kind == cfg.features.split.kind
    assert state.require("evaluate").passed  # the task's default gate: better than the constant baseline

    # The job: the exported graph on the raw test rows, as serving scores them.
    raw = pa.concat_tables(ray_tables(features.heldout_raw["test"]))
    y_test = raw["label"].to_numpy().astype(np.float64)
    export = state.require("export")
    graph_pred = predict_onnx(export.onnx_path, raw, export.input_columns, output=task.output().name)
    primary = f"test/{task.primary_metric}"
    job = task.metrics(y_test, graph_pred, "test")[primary]
    assert job == pytest.approx(state.require("evaluate").metrics[primary], rel=1e-4)  # graph == model

    # Plain xgboost on the same preprocessed rows of the same split.
    x_train, y_train = _numpy(features.train)
    x_test, y_same = _numpy(features.test)
    np.testing.assert_allclose(np.sort(y_same), np.sort(y_test))  # the same test rows, both ways
    plain = task.metrics(y_same, _plain_xgboost(cfg, task, x_train, y_train, x_test), "test")[primary]

    higher = task.higher_is_better(primary)
    bound = plain * (1 - TOLERANCE) if higher else plain * (1 + TOLERANCE)
    print(f"{experiment}: {primary} job={job:.4f} plain xgboost={plain:.4f} bound={bound:.4f}")
    assert (job >= bound) if higher else (job <= bound), (job, plain)
    assert ctx.cfg.registry.model_name == cfg.data.model_name != "flights-delay"


def ray_tables(ds) -> list[pa.Table]:
    import ray

    return ray.get(ds.to_arrow_refs())
