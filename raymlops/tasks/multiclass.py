"""Multiclass classification: one probability per class; answers carry the original class values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.tasks.base import OutputSpec, Task, confusion_picture

__all__ = ["MulticlassTask"]


@dataclass(frozen=True)
class MulticlassTask(Task):
    """``classes``: the label's values in a fixed order (sorted); the target is a value's index."""

    classes: tuple[Any, ...] = ()

    name: ClassVar[str] = "multiclass"
    torch_loss: ClassVar[str] = "cross_entropy"
    xgboost_objective: ClassVar[str] = "multi:softprob"
    primary_metric: ClassVar[str] = "macro_f1"
    directions: ClassVar[dict[str, bool]] = {"accuracy": True, "macro_f1": True, "logloss": False}

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError("MulticlassTask needs at least two classes")

    def target(self, values: pa.Array) -> pa.Array:
        index = pc.index_in(values, value_set=pa.array(list(self.classes), values.type))
        if index.null_count:
            unseen = sorted(set(pc.filter(values, pc.is_null(index)).to_pylist()), key=str)[:5]
            raise ValueError(f"label value(s) {unseen} are not among the classes {list(self.classes)}")
        return pc.cast(index, pa.float32())

    def output(self) -> OutputSpec:
        return OutputSpec("probabilities", len(self.classes))

    def metrics(self, y_true: np.ndarray, pred: np.ndarray, split: str) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score, log_loss

        proba = np.asarray(pred, np.float64).reshape(len(y_true), len(self.classes))
        labels = list(range(len(self.classes)))
        chosen = proba.argmax(axis=1)
        y = np.asarray(y_true).astype(np.int64)
        if not len(y):
            return {f"{split}/{m}": float("nan") for m in self.directions} | {f"{split}/rows": 0.0}
        return {
            f"{split}/accuracy": float(accuracy_score(y, chosen)),
            f"{split}/macro_f1": float(f1_score(y, chosen, labels=labels, average="macro", zero_division=0)),
            f"{split}/logloss": float(log_loss(y, np.clip(proba, 1e-7, 1.0), labels=labels)),
            f"{split}/rows": float(len(y)),
        }

    def baseline(self, y_train: np.ndarray) -> np.ndarray:
        counts = np.bincount(np.asarray(y_train).astype(np.int64), minlength=len(self.classes))
        return counts / max(counts.sum(), 1)

    def answers(self, pred: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        proba = np.asarray(pred, np.float64).reshape(-1, len(self.classes))
        names = [str(c) for c in self.classes]
        return [
            {
                "label": self.classes[int(row.argmax())],
                "probabilities": dict(zip(names, map(float, row), strict=True)),
            }
            for row in proba
        ]

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> MulticlassTask:
        return cls(classes=tuple(description["classes"]))

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "classes": list(self.classes)}

    shap_spaces: ClassVar[Mapping[str, str]] = {"tree": "margin", "permutation": "probability"}

    def comparable(self, other: Task) -> bool:
        return isinstance(other, MulticlassTask) and other.classes == self.classes  # same index per class

    def card_picture(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any] | None:
        proba = np.asarray(pred, np.float64).reshape(-1, len(self.classes))
        return confusion_picture([str(c) for c in self.classes], np.asarray(y_true), proba.argmax(axis=1))
