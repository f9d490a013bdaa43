"""Gradient-boosted trees trained with Ray Train's XGBoostTrainer (data-parallel, rabit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from raymlops.errors import RayMLOpsError
from raymlops.models.family import ModelFamily
from raymlops.training.ray_train import fit_with_ray_train, worker_setup

if TYPE_CHECKING:
    from raymlops.evaluation.tree_shap import TreeShap
    from raymlops.features.preprocess import FittedPreprocessor

__all__ = ["XGBoostConfig", "XGBoostModel"]

logger = logging.getLogger(__name__)
_MAX_CONVERTER_OPSET = 15
# Our metric name -> XGBoost's eval name: the same names as the torch family's per-epoch metrics.
METRIC_NAMES = {"train/loss": "train-logloss", "valid/loss": "valid-logloss", "valid/auc": "valid-auc"}
_EVAL_KEYS = {ours: tuple(name.split("-", 1)) for ours, name in METRIC_NAMES.items()}
_HISTORY_FILE = "history.json"


def _to_numpy(shard) -> tuple[np.ndarray, np.ndarray]:  # shard: ray.data.DataIterator
    xs, ys = [], []
    for batch in shard.iter_batches(batch_format="numpy", batch_size=65536):
        xs.append(batch["x"])
        ys.append(batch["y"])
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.float32)


def _history(evals_result: dict[str, dict[str, list[float]]]) -> list[dict[str, float]]:
    """Per-round metrics under our names, from xgboost's ``evals_result``."""
    columns = {ours: evals_result[split][metric] for ours, (split, metric) in _EVAL_KEYS.items()}
    rounds = len(next(iter(columns.values()), []))
    return [{"round": i + 1, **{name: float(v[i]) for name, v in columns.items()}} for i in range(rounds)]


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
    callbacks: list[Any] = []
    if config["early_stopping_rounds"]:
        # Stop when valid/loss (the last eval set) has not improved for N rounds; keep the best model.
        callbacks.append(
            xgboost.callback.EarlyStopping(rounds=config["early_stopping_rounds"], save_best=True)
        )
    # Every round reports its metrics; a checkpoint every `report_every` rounds (each is a file write). Metric
    # names as the torch family reports them, so runs and Tune compare across families.
    callbacks.append(
        RayTrainReportCallback(
            metrics=METRIC_NAMES, frequency=config["report_every"], checkpoint_at_end=False
        )
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
    )
    # The final checkpoint: the (best) booster where RayTrainReportCallback.get_model looks, and every
    # round's metrics (Ray Train keeps only the retained checkpoints' reports).
    history = _history(evals_result)
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
    early_stopping_rounds: int | None = 10  # stop when valid/loss has not improved for this many rounds
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
    ) -> XGBoostModel:
        from ray.train.xgboost import XGBoostTrainer

        params = {
            "objective": "binary:logistic",
            "eval_metric": ["logloss", "auc"],
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
        }
        result = fit_with_ray_train(
            XGBoostTrainer, _train_loop, config, datasets, trainer_cfg, storage_path, "xgboost", callbacks
        )
        if result.checkpoint is None:
            raise RayMLOpsError("XGBoost training finished without a checkpoint.")
        return self.load_checkpoint(result.checkpoint, num_features)

    def load_checkpoint(self, checkpoint: Any, num_features: int) -> XGBoostModel:
        """The fitted booster from a ``ray.train.Checkpoint`` of this family (a run, a Tune trial)."""
        import json
        from pathlib import Path

        from ray.train.xgboost import RayTrainReportCallback

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

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        import xgboost

        return self._fitted().predict(xgboost.DMatrix(np.asarray(x, dtype=np.float32)))

    def global_explainer(self, pre: FittedPreprocessor) -> TreeShap:
        """Exact Tree SHAP of the booster, in log-odds, summed from one-hot features to raw columns."""
        from raymlops.evaluation.tree_shap import TreeShap

        return TreeShap(self._fitted(), pre)

    def to_onnx(self, opset: int):  # -> onnx.ModelProto
        """ONNX graph: ``features`` [N, F] float -> ``probability`` [N] float (column 1 of the classifier)."""
        from onnx import TensorProto, helper
        from onnxmltools.convert import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        # onnxmltools' converters stop at opset 15; the preprocessing graph follows the model's opset.
        model = convert_xgboost(
            self._fitted(),
            initial_types=[("features", FloatTensorType([None, self.num_features_]))],
            target_opset=min(opset, _MAX_CONVERTER_OPSET),
        )
        graph = model.graph
        probabilities = next(o.name for o in graph.output if o.name != "label")
        graph.initializer.append(helper.make_tensor("positive_class", TensorProto.INT64, [], [1]))
        graph.node.append(
            helper.make_node("Gather", [probabilities, "positive_class"], ["probability"], axis=1)
        )
        del graph.output[:]
        graph.output.append(helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None]))
        return model
