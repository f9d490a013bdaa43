"""The task contract: what every room may ask of the problem's shape."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

__all__ = ["OutputSpec", "Task", "confusion_picture", "scatter_picture"]


@dataclass(frozen=True)
class OutputSpec:
    """The exported graph's model output: its name and its width per row (1, or the classes)."""

    name: str
    width: int


class Task(abc.ABC):
    """One problem shape. Subclasses are small frozen values: they carry what was learnt about the label
    (the positive class, the class names) and record themselves in lineage through ``describe``."""

    name: ClassVar[str]
    torch_loss: ClassVar[str]  # the torch family's loss
    xgboost_objective: ClassVar[str]  # the XGBoost family's objective
    primary_metric: ClassVar[str]  # what search maximises or minimises, and gates default to
    directions: ClassVar[Mapping[str, bool]]  # metric -> higher is better

    @abc.abstractmethod
    def target(self, values: pa.Array) -> pa.Array:
        """The training target from the label column's values (nulls already dropped)."""

    @abc.abstractmethod
    def output(self) -> OutputSpec:
        """The model output the graph exports."""

    @abc.abstractmethod
    def metrics(self, y_true: np.ndarray, pred: np.ndarray, split: str) -> dict[str, float]:
        """``<split>/<metric>`` figures of predictions ``pred`` (the model output) against targets."""

    @abc.abstractmethod
    def baseline(self, y_train: np.ndarray) -> np.ndarray:
        """The constant prediction (one output row) a model must beat, fitted on the train targets."""

    @abc.abstractmethod
    def answers(self, pred: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        """The v1 answer fields of each row; ``threshold``: the serving decision threshold (binary)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What lineage and the model card record: the name and what was learnt about the label."""

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Task:
        """The task ``describe`` recorded (lineage, the registry's ``raymlops.task`` tag)."""
        return cls()

    def loss(self) -> str:
        """The torch family's loss (a task may let config choose among several)."""
        return self.torch_loss

    def higher_is_better(self, metric: str) -> bool:
        return self.directions[metric.rsplit("/", 1)[-1]]

    def baseline_metrics(self, y_train: np.ndarray, y_true: np.ndarray, split: str) -> dict[str, float]:
        """The metrics of the constant baseline on ``y_true``."""
        constant = np.asarray(self.baseline(y_train), dtype=np.float64).reshape(1, -1)
        pred = np.repeat(constant, len(y_true), axis=0)
        return self.metrics(y_true, pred[:, 0] if self.output().width == 1 else pred, split)

    # Evaluation and the model card: the gates, the champion comparison and the picture a task calls for.
    shap_spaces: ClassVar[Mapping[str, str]] = {"tree": "log_odds", "permutation": "probability"}

    def default_gates(self, split: str) -> list[str]:
        """The gates when ``evaluate.gates`` is null: the primary metric beats the constant baseline."""
        op = ">" if self.higher_is_better(self.primary_metric) else "<"
        return [f"{split}/{self.primary_metric} {op} baseline"]

    def champion_tolerance(self, split: str, champion: Mapping[str, float]) -> dict[str, float]:
        """``evaluate.champion.max_regression`` when null: how much worse than the champion (its
        ``champion`` metrics) the primary metric may be; 0.02 suits metrics bounded by 0 and 1."""
        return {f"{split}/{self.primary_metric}": 0.02}

    def comparable(self, other: Task) -> bool:
        """Whether a model of task ``other`` answers the same question, so their metrics compare."""
        return type(other) is type(self) and other.output() == self.output()

    def card_picture(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any] | None:
        """The model card's picture of held-out predictions (plain data; see :func:`confusion_picture`
        and :func:`scatter_picture`), or None."""
        return None


def confusion_picture(labels: list[str], actual: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """A confusion matrix: ``counts[i][j]`` rows of class ``labels[i]`` predicted as ``labels[j]``."""
    k = len(labels)
    flat = np.asarray(actual, np.int64) * k + np.asarray(predicted, np.int64)
    counts = np.bincount(flat, minlength=k * k).reshape(k, k)
    return {"kind": "confusion_matrix", "labels": list(labels), "counts": counts.tolist()}


def scatter_picture(
    actual: np.ndarray, predicted: np.ndarray, max_points: int = 500, seed: int = 0
) -> dict[str, Any]:
    """Predicted against actual values, at most ``max_points`` of them (a seeded sample)."""
    y, p = np.asarray(actual, np.float64).reshape(-1), np.asarray(predicted, np.float64).reshape(-1)
    keep = np.arange(len(y))
    if len(y) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), size=max_points, replace=False))
    return {
        "kind": "predicted_vs_actual",
        "rows": len(y),
        "actual": [round(float(v), 6) for v in y[keep]],
        "predicted": [round(float(v), 6) for v in p[keep]],
    }
