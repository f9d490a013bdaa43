"""The task contract: what every room may ask of the problem's shape."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

__all__ = ["OutputSpec", "Task"]


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
    def answers(self, pred: np.ndarray) -> list[dict[str, Any]]:
        """The v1 answer fields of each row."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What lineage and the model card record: the name and what was learnt about the label."""

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
