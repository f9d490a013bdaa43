"""Binary-classification metrics and the gate that decides whether a model may be registered."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["binary_metrics", "check_gates"]


def binary_metrics(
    y_true: np.ndarray, proba: np.ndarray, split: str, threshold: float = 0.5
) -> dict[str, float]:
    """ROC AUC, accuracy, log loss, positive rate, named ``<split>/<metric>``."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    proba = np.clip(proba.astype(np.float64), 1e-7, 1 - 1e-7)
    both_classes = len(np.unique(y_true)) == 2
    return {
        f"{split}/auc": float(roc_auc_score(y_true, proba)) if both_classes else float("nan"),
        f"{split}/accuracy": float(accuracy_score(y_true, proba >= threshold)),
        f"{split}/logloss": float(log_loss(y_true, proba, labels=[0, 1])),
        f"{split}/positive_rate": float(np.mean(y_true)),
        f"{split}/rows": float(len(y_true)),
    }


def check_gates(
    metrics: Mapping[str, float], minimums: Mapping[str, float], maximums: Mapping[str, float]
) -> list[str]:
    """Failed gates as messages; an unknown metric name is itself a failure listing the known ones."""
    failures = []
    for bounds, is_ok, word in (
        (minimums, lambda v, b: v >= b, "at least"),
        (maximums, lambda v, b: v <= b, "at most"),
    ):
        for name, bound in bounds.items():
            if name not in metrics:
                failures.append(f"{name}: no such metric (known: {', '.join(sorted(metrics))})")
            elif not is_ok(metrics[name], bound):  # NaN fails both ways
                failures.append(f"{name} = {metrics[name]:.4f}, must be {word} {bound}")
    return failures
