"""Multiclass classification: one probability per class; answers carry the original class values."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.tasks.base import OutputSpec, Task, _check_same_shape, _mean_abs_diff, _shown, confusion_picture

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

    def unknown_values(self, values: Sequence[Any]) -> list[Any]:
        return [v for v in values if v not in self.classes]

    def constant_prediction(self, target_mean: float, label_counts: Mapping[Any, int] | None) -> np.ndarray:
        counts = np.array([(label_counts or {}).get(c, 0) for c in self.classes], dtype=np.float64)
        return counts / max(counts.sum(), 1.0)

    def split_kind(self) -> str:
        return "stratified"  # every split keeps each class's share

    def output(self) -> OutputSpec:
        return OutputSpec("probabilities", len(self.classes))

    def metrics(self, y_true: np.ndarray, pred: np.ndarray, split: str) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score, log_loss

        proba = np.asarray(pred, np.float64).reshape(len(y_true), len(self.classes))
        # float32 softmax rows sum to 1 only within rounding: scikit-learn's log loss warns on each call.
        proba = proba / np.maximum(proba.sum(axis=1, keepdims=True), 1e-12)
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

    # Distributed evaluation (see Task and tasks/partial_metrics): a confusion matrix and the log-loss sum,
    # both exact (accuracy and macro-F1 come from the matrix).
    def supports_partials(self) -> bool:
        return True

    def metric_partials(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        from sklearn.metrics import log_loss

        from raymlops.tasks.partial_metrics import confusion_counts

        k = len(self.classes)
        y = np.asarray(y_true).astype(np.int64).reshape(-1)
        proba = np.asarray(pred, np.float64).reshape(len(y), k)
        proba = proba / np.maximum(proba.sum(axis=1, keepdims=True), 1e-12)  # as metrics normalizes
        labels = list(range(k))
        loss = (
            float(log_loss(y, np.clip(proba, 1e-7, 1.0), labels=labels, normalize=False)) if len(y) else 0.0
        )
        return {
            "rows": np.asarray(len(y), np.int64),
            "logloss_sum": np.asarray(loss),
            "confusion": confusion_counts(y, proba.argmax(axis=1), k),
        }

    def metrics_from_partials(self, parts: Mapping[str, np.ndarray], split: str) -> dict[str, float]:
        from raymlops.tasks.partial_metrics import macro_f1

        rows = int(parts["rows"])
        if not rows:
            return {f"{split}/{m}": float("nan") for m in self.directions} | {f"{split}/rows": 0.0}
        confusion = np.asarray(parts["confusion"])
        return {
            f"{split}/accuracy": float(np.trace(confusion)) / rows,
            f"{split}/macro_f1": macro_f1(confusion),
            f"{split}/logloss": float(parts["logloss_sum"]) / rows,
            f"{split}/rows": float(rows),
        }

    def card_picture_from_partials(
        self, parts: Mapping[str, np.ndarray], sample: tuple[np.ndarray, np.ndarray] | None
    ) -> dict[str, Any] | None:
        labels = [str(c) for c in self.classes]
        return {
            "kind": "confusion_matrix",
            "labels": labels,
            "counts": np.asarray(parts["confusion"]).tolist(),
        }

    # Serving (see Task): class values as the label column holds them; names in the output's columns.
    @classmethod
    def answer_schema(cls) -> dict[str, Any]:
        from raymlops.tasks.answers import MulticlassAnswer, answer_row_schema

        return answer_row_schema(MulticlassAnswer)

    def oip_parameters(self) -> dict[str, str | float | bool]:
        # OIP parameters hold scalars only: the class values, in column order, as a JSON array.
        return {"classes": json.dumps(list(self.classes), default=str)}

    def output_columns(self, pred: np.ndarray, threshold: float | None = None) -> dict[str, pa.Array]:
        proba = np.asarray(pred, np.float32).reshape(-1, len(self.classes))
        classes = pa.array(list(self.classes))
        columns = {"label": pc.take(classes, pa.array(proba.argmax(axis=1), pa.int64()))}
        columns.update({f"probability_{c}": pa.array(proba[:, i]) for i, c in enumerate(self.classes)})
        return columns

    def agreement(
        self,
        served: np.ndarray,
        shadow: np.ndarray,
        served_threshold: float | None = None,
        shadow_threshold: float | None = None,
    ) -> tuple[float, float]:
        # The same likeliest class; the difference over every class's probability.
        _check_same_shape(served, shadow)
        same = served.reshape(len(served), -1).argmax(axis=1) == shadow.reshape(len(shadow), -1).argmax(
            axis=1
        )
        return float(np.mean(same)), _mean_abs_diff(served, shadow)

    def outcome_targets(self, values: Sequence[Any]) -> np.ndarray:
        # A class value as sent (strings stay strings; 3 and 3.0 are one class), or its text ("3").
        exact = {_class_key(c): i for i, c in enumerate(self.classes)}
        text = {str(c): i for i, c in enumerate(self.classes)}
        out = np.empty(len(values), np.float64)
        unknown = []
        for i, value in enumerate(values):
            hit = exact.get(_class_key(value), text.get(str(value)))
            out[i] = np.nan if hit is None else hit
            if hit is None:
                unknown.append(value)
        if unknown:
            raise ValueError(
                f"outcome(s) {_shown(unknown)} are not among the classes {list(self.classes)}: "
                "send a class value."
            )
        return out

    def label_values(self, targets: np.ndarray) -> pa.Array:
        # The class at each target index, in the label's own values.
        return pa.array([self.classes[int(t)] for t in np.asarray(targets, np.float64).tolist()])


def _class_key(value: Any) -> tuple[str, Any]:
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float | np.integer | np.floating):
        return ("number", float(value))
    return ("text", str(value))
