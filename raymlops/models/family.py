"""What a model family is: the contract every family keeps, shipped or a user's own.

A family is a class chosen by the ``model`` config (its ``_target_``, see :mod:`raymlops.models.registry`).
The pipeline asks it for these things and nothing else:

============================  ==========================================================================
train (stages/train.py)        ``fit(datasets, num_features, trainer_cfg, storage_path, seed, ...,
                               task=...)`` on Ray Train; afterwards ``task_``, ``history_`` (one dict per
                               report) and ``checkpoint_path_``
tune (training/tune.py)        the same ``fit`` once per trial with ``callbacks=[TuneReportCallback()]``,
                               then ``load_checkpoint(checkpoint, num_features, task)`` of the best trial;
                               ``budget_key`` and ``reports`` bound ASHA's ``max_t``; ``search_space`` is
                               its default ``tune.space``
evaluate, export               ``predict(x)`` on the preprocessed matrix: the task's prediction (below);
                               ``to_onnx(opset)``: a graph ``features`` [N, F] float -> one output named
                               ``task_.output().name`` of the same shape, which the export stage puts
                               behind the preprocessing graph and checks for parity
explain                        ``global_explainer(pre)``: an exact explainer (Tree SHAP for trees), or
                               None for permutation SHAP of the exported graph (any family)
============================  ==========================================================================

The task (``raymlops.tasks``) says what a family learns: its loss or objective (``task.loss()``,
``task.xgboost_objective``), the output's name and width (``task.output()``) and the metric reported
beside the losses (``task.primary_metric``). Predictions keep one convention everywhere: float32 [N] when
the output's width is 1 (binary: P(positive); regression: the value), [N, K] when it is K > 1
(multiclass: one probability per class, in ``task.classes`` order).

===========  ====================  ==========================  ==================  ==================
task         torch loss            XGBoost objective           output (width)      reported metric
===========  ====================  ==========================  ==================  ==================
binary       BCE (sigmoid)         ``binary:logistic``         probability (1)     valid/auc
multiclass   cross-entropy         ``multi:softprob``          probabilities (K)   valid/macro_f1
             (softmax)
regression   MSE, or Huber         ``reg:squarederror``        value (1)           valid/rmse
===========  ====================  ==========================  ==================  ==================

The constructor only stores its parameters (the ``model`` config's keys, Hydra's ``_target_`` aside);
fitted state ends in ``_`` (scikit-learn's convention). Every report carries :func:`reported_metrics`
of the task under these names, so Tune and the runs compare across families. ``tests/conformance/
test_model_families.py`` checks all of this for every registered family, every task, and one family
defined in a test module; ``docs/plugins.md`` walks through writing one.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from raymlops.features.preprocess import FittedPreprocessor
    from raymlops.tasks.base import Task

__all__ = ["GlobalExplainer", "ModelFamily", "fitted_task", "legacy_task", "reported_metrics", "resolve_task"]


def legacy_task() -> Task:
    """The task of everything made before tasks existed: binary with 0/1 targets (the flights label)."""
    from raymlops.tasks.binary import BinaryTask

    return BinaryTask(threshold=0.0)


def resolve_task(task: Task | None) -> Task:
    """``task``, or the legacy binary task when None (``fit`` and ``load_checkpoint`` without one)."""
    return legacy_task() if task is None else task


def fitted_task(model: Any) -> Task:
    """The task a fitted model learnt (its ``task_``); the legacy binary task for a model fitted by hand
    without one (benchmarks and tests set ``booster_`` or ``module_`` directly)."""
    return resolve_task(getattr(model, "task_", None))


def reported_metrics(task: Task | None = None) -> tuple[str, str, str]:
    """Keys every report of every family carries for ``task``: the valid ``tune.metric`` values.

    ``valid/loss`` and ``train/loss`` are the family's own loss (BCE, cross-entropy, MSE...);
    ``valid/<task.primary_metric>`` is the task's metric (binary ``valid/auc``, as before tasks).
    """
    return ("valid/loss", f"valid/{resolve_task(task).primary_metric}", "train/loss")


class GlobalExplainer(Protocol):
    """An explainer of a fitted model over raw input columns (``raymlops.evaluation.tree_shap.TreeShap``).

    ``explain(table)`` returns a ``raymlops.evaluation.explanation.Explanation``: one SHAP value per raw
    input column and row, additive in its ``output_space``.
    """

    method: str  # "tree", ...
    output_space: str  # "log_odds" | "probability"

    def explain(self, table: Any) -> Any: ...


class ModelFamily(abc.ABC):
    """The base of every model family; see the module docstring for who calls what.

    Class attributes a family sets: ``budget_key``, the constructor parameter that sets how long a full
    trial trains (epochs, boosting rounds), and ``search_space``, a default ``tune.space`` over its own
    parameters. ``config_schema`` (optional) is a dataclass of its parameters that Hydra checks at
    compose time; without one, ``raymlops.models.registry.build_model`` checks the names against the
    constructor when the job starts.
    """

    budget_key: ClassVar[str]
    search_space: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    config_schema: ClassVar[type | None] = None

    # Fitted state, set by ``fit`` and ``load_checkpoint``.
    task_: Task  # what was learnt (``fitted_task`` reads it with the legacy default)
    history_: list[dict[str, Any]]  # one dict of metrics per report, ``reported_metrics(task_)`` among them
    checkpoint_path_: str  # the Ray Train checkpoint the fitted state came from
    num_features_: int

    @abc.abstractmethod
    def fit(
        self,
        datasets: dict[str, Any],
        num_features: int,
        trainer_cfg: Any,
        storage_path: str,
        seed: int,
        callbacks: list[Any] | None = None,
        preprocessor: FittedPreprocessor | None = None,
        task: Task | None = None,
    ) -> ModelFamily:
        """Train on Ray Train and return ``self`` fitted.

        Args:
            datasets: ``train`` (sharded across workers) and ``valid`` Ray Datasets with columns ``x``
                (float32 [num_features]) and ``y`` (float32 label).
            num_features: Width of ``x``.
            trainer_cfg: The ``trainer`` config (scaling, precision, failures, checkpoints).
            storage_path: Where Ray Train keeps this run's checkpoints.
            seed: Seeds every worker.
            callbacks: For the ``RunConfig`` (Tune's ``TuneReportCallback``); report every epoch or round
                so that ASHA sees each.
            preprocessor: The fitted preprocessing, for families that keep it in their checkpoints.
            task: What to learn (loss or objective, output width, reported metric); None: the legacy
                binary task. ``y`` holds its targets: 0/1, the class index, or the value.

        ``raymlops.training.ray_train.fit_with_ray_train`` does the Ray Train wiring.
        """

    @abc.abstractmethod
    def load_checkpoint(self, checkpoint: Any, num_features: int, task: Task | None = None) -> ModelFamily:
        """The fitted state from a ``ray.train.Checkpoint`` this family's ``fit`` reported for ``task``
        (None: the legacy binary task); returns self."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """The task's prediction for the preprocessed matrix ``x`` [N, num_features]: float32 [N] when
        ``task_.output().width`` is 1 (P(positive), the value), else [N, width] (class probabilities)."""

    @abc.abstractmethod
    def to_onnx(self, opset: int) -> Any:
        """An ``onnx.ModelProto``: input ``features`` float [N, F] -> one output named
        ``task_.output().name``, float [N] (width 1) or [N, width], equal to ``predict``."""

    @classmethod
    def reports(cls, params: Mapping[str, Any]) -> int:
        """How many reports a full trial with ``params`` makes, at most (ASHA's ``max_t`` default)."""
        return int(params[cls.budget_key])

    def global_explainer(self, pre: FittedPreprocessor) -> GlobalExplainer | None:
        """An explainer of this fitted model for the global SHAP summary; None (the default): permutation
        SHAP of the exported graph, which explains any family."""
        return None
