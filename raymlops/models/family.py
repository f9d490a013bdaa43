"""What a model family is: the contract every family keeps, shipped or a user's own.

A family is a class chosen by the ``model`` config (its ``_target_``, see :mod:`raymlops.models.registry`).
The pipeline asks it for these things and nothing else:

============================  ==========================================================================
train (stages/train.py)        ``fit(datasets, num_features, trainer_cfg, storage_path, seed, ...)`` on Ray
                               Train; afterwards ``history_`` (one dict per report) and ``checkpoint_path_``
tune (training/tune.py)        the same ``fit`` once per trial with ``callbacks=[TuneReportCallback()]``,
                               then ``load_checkpoint`` of the best trial; ``budget_key`` and ``reports``
                               bound ASHA's ``max_t``; ``search_space`` is its default ``tune.space``
evaluate, export               ``predict_proba(x)`` on the preprocessed matrix; ``to_onnx(opset)``: a graph
                               ``features`` [N, F] float -> ``probability`` [N] float, which the export
                               stage puts behind the preprocessing graph and checks for parity
explain                        ``global_explainer(pre)``: an exact explainer (Tree SHAP for trees), or
                               None for permutation SHAP of the exported graph (any family)
============================  ==========================================================================

The constructor only stores its parameters (the ``model`` config's keys, Hydra's ``_target_`` aside);
fitted state ends in ``_`` (scikit-learn's convention). Every report carries :data:`REPORTED_METRICS`
under these names, so Tune and the runs compare across families. ``tests/conformance/
test_model_families.py`` checks all of this for every registered family and for one defined in a test
module; ``docs/plugins.md`` walks through writing one.

Today every family is a binary classifier (BCE loss, ``binary:logistic``, one ``probability`` output).
When tasks arrive (DESIGN §11) the task is what a family asks for its loss or objective and its graph
outputs: it will reach ``fit`` and ``to_onnx`` as one more argument, and :data:`OUTPUT` becomes the
task's.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

if TYPE_CHECKING:
    from raymlops.features.preprocess import FittedPreprocessor

__all__ = ["OUTPUT", "REPORTED_METRICS", "GlobalExplainer", "ModelFamily"]

# The graph output every family's ``to_onnx`` ends in (= raymlops.models.export.PROBABILITY_OUTPUT,
# which this module does not import: export pulls in the preprocessing graph's code).
OUTPUT = "probability"
# Keys every report of every family carries: the valid ``tune.metric`` values.
REPORTED_METRICS = ("valid/loss", "valid/auc", "train/loss")


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
    history_: list[dict[str, Any]]  # one dict of metrics per report, REPORTED_METRICS among them
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

        ``raymlops.training.ray_train.fit_with_ray_train`` does the Ray Train wiring.
        """

    @abc.abstractmethod
    def load_checkpoint(self, checkpoint: Any, num_features: int) -> ModelFamily:
        """The fitted state from a ``ray.train.Checkpoint`` this family's ``fit`` reported; returns self."""

    @abc.abstractmethod
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(label = 1), float [N], for the preprocessed matrix ``x`` [N, num_features]."""

    @abc.abstractmethod
    def to_onnx(self, opset: int) -> Any:
        """An ``onnx.ModelProto``: input ``features`` float [N, F] -> output ``probability`` float [N]."""

    @classmethod
    def reports(cls, params: Mapping[str, Any]) -> int:
        """How many reports a full trial with ``params`` makes, at most (ASHA's ``max_t`` default)."""
        return int(params[cls.budget_key])

    def global_explainer(self, pre: FittedPreprocessor) -> GlobalExplainer | None:
        """An explainer of this fitted model for the global SHAP summary; None (the default): permutation
        SHAP of the exported graph, which explains any family."""
        return None
