"""Gradient-boosted trees trained with Ray Train's XGBoostTrainer (data-parallel, rabit).

The task gives the objective (``task.xgboost_objective``; ``num_class`` for a task of several outputs).
Reports, every round, under the torch family's names:

============  =====================  =====================  ==============================================
objective     train/loss, valid/loss valid/<primary>        early stopping on
============  =====================  =====================  ==============================================
binary        logloss                valid/auc (xgboost's)  valid/auc (as before tasks)
multiclass    mlogloss               valid/macro_f1         valid/loss (macro-F1 moves in steps)
                                     (``task.metrics``)
regression    rmse                   valid/rmse (xgboost's) valid/rmse
============  =====================  =====================  ==============================================

A primary metric XGBoost does not compute is computed each round by ``task.metrics`` on the valid
predictions only (a ``custom_metric`` that returns NaN for the train set, so it costs one pass over the
valid split per round).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from raymlops.errors import RayMLOpsError
from raymlops.models.family import ModelFamily, fitted_task, resolve_task
from raymlops.training.ray_train import fit_with_ray_train, worker_setup

if TYPE_CHECKING:
    from raymlops.evaluation.tree_shap import TreeShap
    from raymlops.features.preprocess import FittedPreprocessor
    from raymlops.tasks.base import Task

__all__ = ["XGBoostConfig", "XGBoostModel"]

logger = logging.getLogger(__name__)
_MAX_CONVERTER_OPSET = 15
# Objective -> XGBoost's eval metrics, the loss first. A task with another objective needs an entry here.
EVAL_METRICS: dict[str, tuple[str, ...]] = {
    "binary:logistic": ("logloss", "auc"),
    "multi:softprob": ("mlogloss",),
    "reg:squarederror": ("rmse",),
}
_HISTORY_FILE = "history.json"


def _eval_metrics(task: Task) -> tuple[str, ...]:
    from raymlops.errors import ConfigError

    if task.xgboost_objective not in EVAL_METRICS:
        objective = task.xgboost_objective
        problem = f"task {task.name}'s objective {objective!r} has no eval metrics in the XGBoost family."
        raise ConfigError("features.task", problem, list(EVAL_METRICS))
    return EVAL_METRICS[task.xgboost_objective]


def metric_names(task: Task) -> dict[str, str]:
    """Our metric name -> XGBoost's eval name: the same names as the torch family's per-epoch metrics
    (binary: train-logloss, valid-logloss, valid-auc)."""
    loss, primary = _eval_metrics(task)[0], task.primary_metric
    return {
        "train/loss": f"train-{loss}",
        "valid/loss": f"valid-{loss}",
        f"valid/{primary}": f"valid-{primary}",
    }


def _history(
    evals_result: dict[str, dict[str, list[float]]], names: dict[str, str]
) -> list[dict[str, float]]:
    """Per-round metrics under our names, from xgboost's ``evals_result``."""
    keys = {ours: tuple(name.split("-", 1)) for ours, name in names.items()}
    columns = {ours: evals_result[split][metric] for ours, (split, metric) in keys.items()}
    rounds = len(next(iter(columns.values()), []))
    return [{"round": i + 1, **{name: float(v[i]) for name, v in columns.items()}} for i in range(rounds)]


def _task_metric(task: Task, dvalid: Any) -> Any:
    """A ``custom_metric``: the task's primary metric on the valid split, NaN on any other eval set."""
    primary = task.primary_metric

    def metric(predt: np.ndarray, data: Any) -> tuple[str, float]:
        if data is not dvalid:
            return primary, float("nan")
        return primary, float(task.metrics(data.get_label(), predt, "valid")[f"valid/{primary}"])

    return metric


def _to_numpy(shard) -> tuple[np.ndarray, np.ndarray]:  # shard: ray.data.DataIterator
    xs, ys = [], []
    for batch in shard.iter_batches(batch_format="numpy", batch_size=65536):
        xs.append(batch["x"])
        ys.append(batch["y"])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)


def _train_loop(config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; Ray Train sets up the rabit collective between them."""
    import json
    import tempfile
    from pathlib import Path

    import ray.train
    import xgboost
    from ray.train.xgboost import RayTrainReportCallback

    rank = worker_setup(config["seed"])
    x_train, y_train = _to_numpy(ray.train.get_dataset_shard("train"))
    x_valid, y_valid = _to_numpy(ray.train.get_dataset_shard("valid"))
    dtrain = xgboost.DMatrix(x_train, label=y_train)
    dvalid = xgboost.DMatrix(x_valid, label=y_valid)
    task = config["task"]
    native = _eval_metrics(task)
    names = metric_names(task)
    callbacks: list[Any] = []
    if config["early_stopping_rounds"]:
        # Stop when the valid split's primary metric (binary: auc, as before tasks) has not improved for
        # N rounds, or its loss where XGBoost does not compute the metric itself; keep the best model.
        primary = task.primary_metric if task.primary_metric in native else native[0]
        callbacks.append(
            xgboost.callback.EarlyStopping(
                rounds=config["early_stopping_rounds"],
                save_best=True,
                metric_name=primary,
                data_name="valid",
                maximize=primary != native[0] and task.higher_is_better(primary),
            )
        )
    # Every round reports its metrics; a checkpoint every `report_every` rounds (each is a file write). Metric
    # names as the torch family reports them, so runs and Tune compare across families.
    callbacks.append(
        RayTrainReportCallback(metrics=names, frequency=config["report_every"], checkpoint_at_end=False)
    )
    evals_result: dict[str, dict[str, list[float]]] = {}
    booster = xgboost.train(
        config["params"],
        dtrain,
        num_boost_round=config["num_boost_round"],
        evals=[(dtrain, "train"), (dvalid, "valid")],
        evals_result=evals_result,
        verbose_eval=10,
        callbacks=callbacks,
        custom_metric=None if task.primary_metric in native else _task_metric(task, dvalid),
    )
    # The final checkpoint: the (best) booster where RayTrainReportCallback.get_model looks, and every
    # round's metrics (Ray Train keeps only the retained checkpoints' reports).
    history = _history(evals_result, names)
    with tempfile.TemporaryDirectory() as folder:
        if rank == 0:
            booster.save_model(Path(folder) / RayTrainReportCallback.CHECKPOINT_NAME)
            (Path(folder) / _HISTORY_FILE).write_text(json.dumps(history))
            ray.train.report(history[-1], checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(history[-1])


@dataclass
class XGBoostConfig:  # the model group's schema with model=xgboost (raymlops.config.register_configs)
    _target_: str = "raymlops.models.xgboost_model.XGBoostModel"
    max_depth: int = 6
    eta: float = 0.2
    num_boost_round: int = 60
    subsample: float = 0.9
    colsample_bytree: float = 0.9
    min_child_weight: float = 1.0
    early_stopping_rounds: int | None = 10  # rounds with no better valid/auc, rmse (multiclass: loss)
    report_every: int = 10  # rounds between checkpoints (every round reports its metrics)


class XGBoostModel(ModelFamily):
    """An XGBoost family member. The constructor stores parameters; ``fit`` sets ``booster_``."""

    budget_key: ClassVar[str] = "num_boost_round"
    config_schema: ClassVar[type | None] = XGBoostConfig
    search_space: ClassVar[dict[str, dict[str, Any]]] = {
        "eta": {"type": "loguniform", "low": 0.03, "high": 0.3},
        "max_depth": {"type": "int", "low": 3, "high": 8},
        "subsample": {"type": "uniform", "low": 0.6, "high": 1.0},
        "min_child_weight": {"type": "loguniform", "low": 0.5, "high": 10.0},
    }

    @classmethod
    def reports(cls, params: Any) -> int:
        """Every round reports (Ray's RayTrainReportCallback: ``frequency`` only spaces the checkpoints),
        then once more at the end."""
        return int(params["num_boost_round"]) + 1

    def __init__(
        self,
        max_depth: int = 6,
        eta: float = 0.2,
        num_boost_round: int = 60,
        subsample: float = 0.9,
        colsample_bytree: float = 0.9,
        min_child_weight: float = 1.0,
        early_stopping_rounds: int | None = 10,
        report_every: int = 10,
    ) -> None:
        self.max_depth, self.eta, self.num_boost_round = max_depth, eta, num_boost_round
        self.subsample, self.colsample_bytree, self.min_child_weight = (
            subsample,
            colsample_bytree,
            min_child_weight,
        )
        self.early_stopping_rounds, self.report_every = early_stopping_rounds, report_every

    def fit(
        self,
        datasets: dict[str, Any],
        num_features: int,
        trainer_cfg: Any,
        storage_path: str,
        seed: int,
        callbacks: list[Any] | None = None,
        preprocessor: Any = None,  # recorded by the torch family's checkpoints; the ONNX graph holds it here
        task: Task | None = None,
    ) -> XGBoostModel:
        from ray.train.xgboost import XGBoostTrainer

        task = resolve_task(task)
        width = task.output().width
        params = {
            "objective": task.xgboost_objective,
            **({"num_class": width} if width > 1 else {}),
            "eval_metric": list(_eval_metrics(task)),
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "seed": seed,
            "device": "cuda" if trainer_cfg.scaling.use_gpu else "cpu",
        }
        config = {
            "params": params,
            "num_boost_round": self.num_boost_round,
            "early_stopping_rounds": self.early_stopping_rounds,
            "report_every": self.report_every,
            "seed": seed,
            "task": task,
        }
        result = fit_with_ray_train(
            XGBoostTrainer, _train_loop, config, datasets, trainer_cfg, storage_path, "xgboost", callbacks
        )
        if result.checkpoint is None:
            raise RayMLOpsError("XGBoost training finished without a checkpoint.")
        return self.load_checkpoint(result.checkpoint, num_features, task)

    def load_checkpoint(self, checkpoint: Any, num_features: int, task: Task | None = None) -> XGBoostModel:
        """The fitted booster from a ``ray.train.Checkpoint`` of this family (a run, a Tune trial)."""
        import json
        from pathlib import Path

        from ray.train.xgboost import RayTrainReportCallback

        self.task_ = resolve_task(task)
        self.booster_ = RayTrainReportCallback.get_model(checkpoint)
        self.num_features_ = num_features
        with checkpoint.as_directory() as folder:
            history_file = Path(folder) / _HISTORY_FILE
            self.history_ = json.loads(history_file.read_text()) if history_file.exists() else []
        self.checkpoint_path_ = checkpoint.path
        return self

    def _fitted(self) -> Any:  # -> xgboost.Booster
        if not hasattr(self, "booster_"):
            raise RayMLOpsError("XGBoostModel is not fitted: call fit() first.")
        return self.booster_

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The task's prediction: P(positive) [N], class probabilities [N, K] or the value [N]."""
        import xgboost

        width = fitted_task(self).output().width
        pred = self._fitted().predict(xgboost.DMatrix(np.asarray(x, dtype=np.float32)))
        return np.asarray(pred, dtype=np.float32).reshape((-1, width) if width > 1 else (-1,))

    def global_explainer(self, pre: FittedPreprocessor) -> TreeShap:
        """Exact Tree SHAP of the booster in the task's margin (binary log-odds, each class's margin, the
        value), summed from one-hot features to raw columns."""
        from raymlops.evaluation.tree_shap import TreeShap

        return TreeShap(self._fitted(), pre, task=getattr(self, "task_", None))

    def to_onnx(self, opset: int):  # -> onnx.ModelProto
        """ONNX graph: ``features`` [N, F] float -> the task's output: ``probability`` [N] (column 1 of
        the binary classifier), ``probabilities`` [N, K], or ``value`` [N]."""
        from onnx import TensorProto, helper
        from onnxmltools.convert import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        output = fitted_task(self).output()
        # onnxmltools' converters stop at opset 15; the preprocessing graph follows the model's opset.
        model = convert_xgboost(
            self._fitted(),
            initial_types=[("features", FloatTensorType([None, self.num_features_]))],
            target_opset=min(opset, _MAX_CONVERTER_OPSET),
        )
        graph = model.graph
        classifier = any(o.name == "label" for o in graph.output)
        # The converter's scores (a classifier's probabilities [N, K], a regressor's variable [N, 1]) under
        # a name of ours, so that the task's output name (``probabilities`` too) is free.
        scores = next(o.name for o in graph.output if o.name != "label")
        for node in graph.node:
            node.output[:] = ["xgb_scores" if name == scores else name for name in node.output]
        if output.width > 1:
            graph.node.append(helper.make_node("Identity", ["xgb_scores"], [output.name]))
        elif classifier:  # binary: P(class 1)
            graph.initializer.append(helper.make_tensor("positive_class", TensorProto.INT64, [], [1]))
            graph.node.append(
                helper.make_node("Gather", ["xgb_scores", "positive_class"], [output.name], axis=1)
            )
        else:
            graph.initializer.append(helper.make_tensor("flat_shape", TensorProto.INT64, [1], [-1]))
            graph.node.append(helper.make_node("Reshape", ["xgb_scores", "flat_shape"], [output.name]))
        shape = [None, output.width] if output.width > 1 else [None]
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info(output.name, TensorProto.FLOAT, shape))
        return model
