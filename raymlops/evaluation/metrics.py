"""Binary-classification metrics and the gate that decides whether a model may be registered."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from raymlops.errors import ConfigError

__all__ = ["binary_metrics", "check_gates", "parse_gate"]


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


_GATE = re.compile(r"^\s*(?P<metric>[\w/.-]+)\s*(?P<op>>=|<=|>|<)\s*(?P<bound>[-+]?[\d.]+(?:e[-+]?\d+)?)\s*$")
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def parse_gate(expression: str) -> tuple[str, str, float]:
    """``"test/auc >= 0.6"`` -> ``("test/auc", ">=", 0.6)``; anything else is a ConfigError."""
    match = _GATE.match(expression)
    if match is None:
        raise ConfigError("evaluate.gates", f"{expression!r} is not a gate such as 'test/auc >= 0.6'.")
    return match["metric"], match["op"], float(match["bound"])


def check_gates(metrics: Mapping[str, float], gates: Iterable[str]) -> list[str]:
    """Failed gates as messages; an unknown metric name is itself a failure listing the known ones."""
    failures = []
    for name, op, bound in map(parse_gate, gates):
        if name not in metrics:
            failures.append(f"{name}: no such metric (known: {', '.join(sorted(metrics))})")
        elif not _OPS[op](metrics[name], bound):  # NaN fails every comparison
            failures.append(f"{name} = {metrics[name]:.4f}, must be {op} {bound}")
    return failures
