"""Binary classification: a probability of the positive class."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.tasks.base import (
    OutputSpec,
    Task,
    _check_same_shape,
    _mean_abs_diff,
    _shown,
    confusion_picture,
)

__all__ = ["BinaryTask"]


@dataclass(frozen=True)
class BinaryTask(Task):
    """``positive``: the label value that is the positive class; or ``threshold``: positive when the
    numeric label is above it (as the flights quickstart's ``arr_delay > 15``)."""

    positive: Any = None
    threshold: float | None = None
    decision: float = 0.5  # probability at or above which the answer's label is the positive class
    negative: Any = None  # the other value, for answers in the label's own terms

    name: ClassVar[str] = "binary"
    torch_loss: ClassVar[str] = "bce"
    xgboost_objective: ClassVar[str] = "binary:logistic"
    primary_metric: ClassVar[str] = "auc"
    directions: ClassVar[dict[str, bool]] = {"auc": True, "accuracy": True, "logloss": False}

    def __post_init__(self) -> None:
        if (self.positive is None) == (self.threshold is None):
            raise ValueError("BinaryTask takes exactly one of positive and threshold")

    def target(self, values: pa.Array) -> pa.Array:
        if self.threshold is not None:
            hit = pc.greater(values, pa.scalar(self.threshold))
        else:
            hit = pc.equal(values, pa.scalar(self.positive, values.type))
        return pc.cast(hit, pa.float32())

    def unknown_values(self, values: Sequence[Any]) -> list[Any]:
        if self.threshold is not None:
            return []
        return [v for v in values if v != self.positive and v != self.negative]

    def split_kind(self) -> str:
        return "stratified"  # every split keeps each class's share

    def output(self) -> OutputSpec:
        return OutputSpec("probability", 1)

    def metrics(self, y_true: np.ndarray, pred: np.ndarray, split: str) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

        proba = np.clip(np.asarray(pred, np.float64).reshape(-1), 1e-7, 1 - 1e-7)
        both = len(np.unique(y_true)) == 2
        return {
            f"{split}/auc": float(roc_auc_score(y_true, proba)) if both else float("nan"),
            f"{split}/accuracy": float(accuracy_score(y_true, proba >= self.decision)),
            f"{split}/logloss": float(log_loss(y_true, proba, labels=[0, 1])),
            f"{split}/positive_rate": float(np.mean(y_true)) if len(y_true) else float("nan"),
            f"{split}/rows": float(len(y_true)),
        }

    def baseline(self, y_train: np.ndarray) -> np.ndarray:
        return np.array([float(np.mean(y_train))])

    def answers(self, pred: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        cut = self.decision if threshold is None else threshold
        proba = np.asarray(pred, np.float64).reshape(-1).tolist()
        if self.threshold is not None or self.negative is None:  # a label made by a threshold: 0 / 1
            return [{"probability": p, "label": int(p >= cut)} for p in proba]
        return [{"probability": p, "label": self.positive if p >= cut else self.negative} for p in proba]

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> BinaryTask:
        if description.get("threshold") is not None:
            return cls(threshold=float(description["threshold"]))
        return cls(positive=description.get("positive"), negative=description.get("negative"))

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.name,
            **({"threshold": self.threshold} if self.threshold is not None else {}),
            **({"positive": self.positive, "negative": self.negative} if self.positive is not None else {}),
        }

    def comparable(self, other: Task) -> bool:
        # Labels made by a threshold compare whatever it was (a legacy version reads back as 0.0);
        # labels naming a class compare only when they name the same positive class.
        return isinstance(other, BinaryTask) and (
            (self.threshold is not None and other.threshold is not None) or self.positive == other.positive
        )

    def card_picture(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any] | None:
        labels = ["0", "1"] if self.positive is None else [str(self.negative), str(self.positive)]
        chosen = np.asarray(pred, np.float64).reshape(-1) >= self.decision
        return confusion_picture(labels, np.asarray(y_true) > 0.5, chosen)

    # Distributed evaluation (see Task and tasks/partial_metrics): counts and log-loss sums are exact; the
    # AUC is binned, with its error bound computed from the same histograms.
    def supports_partials(self) -> bool:
        return True

    def metric_partials(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        from sklearn.metrics import log_loss

        from raymlops.tasks.partial_metrics import confusion_counts, score_histograms, score_ranges

        y = np.asarray(y_true, np.float64).reshape(-1)
        proba = np.clip(np.asarray(pred, np.float64).reshape(-1), 1e-7, 1 - 1e-7)  # as metrics clips
        loss = float(log_loss(y, proba, labels=[0, 1], normalize=False)) if len(y) else 0.0
        return {
            "rows": np.asarray(len(y), np.int64),
            "positives": np.asarray(y.sum()),
            "logloss_sum": np.asarray(loss),
            "confusion": confusion_counts(y > 0.5, proba >= self.decision, 2),
            "auc_histograms": score_histograms(y, proba),
            "auc_ranges": score_ranges(proba),  # tells true ties (one score) from binned ones
        }

    def merge_partials(self, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, Any]:
        from raymlops.tasks.partial_metrics import add_partials, merge_score_ranges

        ranges = merge_score_ranges(
            a["auc_histograms"], a["auc_ranges"], b["auc_histograms"], b["auc_ranges"]
        )
        summed = add_partials(
            {k: v for k, v in a.items() if k != "auc_ranges"},
            {k: v for k, v in b.items() if k != "auc_ranges"},
        )
        return summed | {"auc_ranges": ranges}

    def metrics_from_partials(self, parts: Mapping[str, np.ndarray], split: str) -> dict[str, float]:
        from raymlops.tasks.partial_metrics import binned_auc

        rows = int(parts["rows"])
        nan = float("nan")
        confusion = np.asarray(parts["confusion"])
        both = bool(confusion[0].sum() and confusion[1].sum())
        return {
            f"{split}/auc": binned_auc(np.asarray(parts["auc_histograms"])) if both else nan,
            f"{split}/accuracy": float(np.trace(confusion)) / rows if rows else nan,
            f"{split}/logloss": float(parts["logloss_sum"]) / rows if rows else nan,
            f"{split}/positive_rate": float(parts["positives"]) / rows if rows else nan,
            f"{split}/rows": float(rows),
        }

    def metric_bounds(self, parts: Mapping[str, np.ndarray], split: str) -> dict[str, float]:
        from raymlops.tasks.partial_metrics import binned_auc_max_error

        hist, ranges = np.asarray(parts["auc_histograms"]), np.asarray(parts["auc_ranges"])
        return {f"{split}/auc": binned_auc_max_error(hist, ranges)}

    def card_picture_from_partials(
        self, parts: Mapping[str, np.ndarray], sample: tuple[np.ndarray, np.ndarray] | None
    ) -> dict[str, Any] | None:
        labels = ["0", "1"] if self.positive is None else [str(self.negative), str(self.positive)]
        return {
            "kind": "confusion_matrix",
            "labels": labels,
            "counts": np.asarray(parts["confusion"]).tolist(),
        }

    # Serving (see Task): the label in the label's own terms; the positive class named for OIP clients.
    @classmethod
    def answer_schema(cls) -> dict[str, Any]:
        from raymlops.tasks.answers import BinaryAnswer, answer_row_schema

        return answer_row_schema(BinaryAnswer)

    def oip_parameters(self) -> dict[str, str | float | bool]:
        return {} if self.positive is None else {"positive": json.dumps(self.positive, default=str)}

    def output_columns(self, pred: np.ndarray, threshold: float | None = None) -> dict[str, pa.Array]:
        cut = self.decision if threshold is None else threshold
        proba = np.asarray(pred, np.float32).reshape(-1)
        hit = proba >= cut
        if self.threshold is not None or self.negative is None:  # as answers: 0 / 1
            label = pa.array(hit.astype(np.int8))
        else:
            kind = pa.array([self.positive, self.negative]).type
            label = pc.if_else(pa.array(hit), pa.scalar(self.positive, kind), pa.scalar(self.negative, kind))
        return {"probability": pa.array(proba, pa.float32()), "label": label}

    def agreement(
        self,
        served: np.ndarray,
        shadow: np.ndarray,
        served_threshold: float | None = None,
        shadow_threshold: float | None = None,
    ) -> tuple[float, float]:
        # Each version's label by its own serving threshold, as each would have answered.
        _check_same_shape(served, shadow)
        cut = self.decision if served_threshold is None else served_threshold
        other = self.decision if shadow_threshold is None else shadow_threshold
        return float(np.mean((served >= cut) == (shadow >= other))), _mean_abs_diff(served, shadow)

    def outcome_targets(self, values: Sequence[Any]) -> np.ndarray:
        # The label's own values (the positive class or the other, or their text), else true / false
        # or 0 / 1 as the target itself; a threshold's raw number (a delay) is not an outcome.
        out = np.empty(len(values), np.float64)
        unknown = []
        classes = [(c, t) for c, t in ((self.positive, 1.0), (self.negative, 0.0)) if c is not None]
        for i, value in enumerate(values):
            hit = next((t for c, t in classes if _same_value(value, c)), None)
            if hit is None and (isinstance(value, bool) or (not isinstance(value, str) and value in (0, 1))):
                hit = float(value)
            out[i] = np.nan if hit is None else hit
            if hit is None:
                unknown.append(value)
        if unknown:
            allowed = [*(c for c, _ in classes), True, False, 0, 1]
            raise ValueError(
                f"outcome(s) {_shown(unknown)} are not outcomes of this label: send one of {allowed}."
            )
        return out

    def label_values(self, targets: np.ndarray) -> pa.Array:
        # A thresholded label (a delay) gets a stand-in number on the right side of the threshold: the
        # threshold itself (not above it: negative) or one above it (positive); the true number is unknown.
        hit = np.asarray(targets, np.float64) >= 0.5
        if self.threshold is not None:
            return pa.array(np.where(hit, self.threshold + 1.0, self.threshold))
        if self.negative is None:
            raise ValueError(f"the label's other value (besides {self.positive!r}) is unknown to this task")
        return pa.array([self.positive if h else self.negative for h in hit.tolist()])


def _same_value(value: Any, cls: Any) -> bool:
    """An outcome names the class: equal as sent (``True`` for ``True``, 3 for 3.0), or as text."""
    if isinstance(value, bool) != isinstance(cls, bool):
        return str(value).lower() == str(cls).lower()
    return bool(value == cls) or str(value) == str(cls)
