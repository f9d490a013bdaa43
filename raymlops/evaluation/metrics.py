"""Metrics per task (binary classification, regression), per slice, and the gates that decide whether a
model may be registered: absolute thresholds and "not worse than the champion by more than X"."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.errors import ConfigError

__all__ = [
    "TASKS",
    "GateResult",
    "binary_metrics",
    "champion_gates",
    "check_gates",
    "gate_results",
    "higher_is_better",
    "parse_gate",
    "regression_metrics",
    "slice_metrics",
    "task_metrics",
]

TASKS = ("binary", "regression")
_HIGHER_IS_BETTER = {"auc", "accuracy", "r2"}
_LOWER_IS_BETTER = {"logloss", "rmse", "mae"}


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


def regression_metrics(y_true: np.ndarray, pred: np.ndarray, split: str) -> dict[str, float]:
    """RMSE, MAE, R², named ``<split>/<metric>``."""
    y, p = y_true.astype(np.float64), pred.astype(np.float64)
    error = p - y
    total = float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0
    return {
        f"{split}/rmse": float(np.sqrt(np.mean(error**2))) if len(y) else float("nan"),
        f"{split}/mae": float(np.mean(np.abs(error))) if len(y) else float("nan"),
        f"{split}/r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else float("nan"),
        f"{split}/rows": float(len(y)),
    }


def task_metrics(task: str, y_true: np.ndarray, pred: np.ndarray, split: str) -> dict[str, float]:
    if task == "binary":
        return binary_metrics(y_true, pred, split)
    if task == "regression":
        return regression_metrics(y_true, pred, split)
    raise ConfigError("evaluate.task", f"{task!r} is not a task.", TASKS)


def higher_is_better(metric: str) -> bool:
    """Direction of a metric from its name (``test/auc`` -> True, ``test/logloss`` -> False)."""
    base = metric.rsplit("/", 1)[-1]
    if base in _HIGHER_IS_BETTER:
        return True
    if base in _LOWER_IS_BETTER:
        return False
    raise ConfigError(
        "evaluate.champion.max_regression",
        f"{metric!r} has no known direction.",
        sorted(_HIGHER_IS_BETTER | _LOWER_IS_BETTER),
    )


def slice_metrics(
    table: pa.Table,
    y_true: np.ndarray,
    pred: np.ndarray,
    *,
    task: str,
    columns: Sequence[str],
    split: str,
    min_rows: int = 30,
    max_values: int = 20,
) -> dict[str, list[dict[str, Any]]]:
    """Metrics per value of each slice column (most frequent ``max_values`` values), with counts.

    Slices smaller than ``min_rows`` are listed with their count and no metrics: a handful of rows
    gives numbers that only look precise.
    """
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ConfigError(
            "evaluate.slices", f"column(s) {missing} are not in the evaluated data.", table.column_names
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for column in columns:
        values = pc.cast(table[column], pa.string()).fill_null("<null>").to_numpy(zero_copy_only=False)
        counts = pc.value_counts(pa.array(values)).to_pylist()
        counts.sort(key=lambda c: (-c["counts"], c["values"]))
        rows = []
        for entry in counts[:max_values]:
            mask = values == entry["values"]
            row: dict[str, Any] = {"value": entry["values"], "rows": int(entry["counts"])}
            if entry["counts"] >= min_rows:
                metrics = task_metrics(task, y_true[mask], pred[mask], split)
                row |= {k.split("/", 1)[1]: _finite(v) for k, v in metrics.items() if not k.endswith("/rows")}
            rows.append(row)
        out[column] = rows
    return out


def _finite(value: float) -> float | None:
    return None if value != value else round(float(value), 6)  # NaN (one class only) -> None


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def gate_results(metrics: Mapping[str, float], gates: Iterable[str]) -> list[GateResult]:
    """Every absolute gate with its outcome; an unknown metric name fails, listing the known ones."""
    results = []
    for expression in gates:
        name, op, bound = parse_gate(expression)
        gate = f"{name} {op} {bound:g}"
        if name not in metrics:
            results.append(
                GateResult(gate, False, f"{name}: no such metric (known: {', '.join(sorted(metrics))})")
            )
        else:
            passed = _OPS[op](metrics[name], bound)  # NaN fails every comparison
            value = f"{name} = {metrics[name]:.4f}"
            detail = f"{value} ({op} {bound})" if passed else f"{value}, must be {op} {bound}"
            results.append(GateResult(gate, passed, detail))
    return results


def check_gates(metrics: Mapping[str, float], gates: Iterable[str]) -> list[str]:
    """Failed gates as messages; an unknown metric name is itself a failure listing the known ones."""
    return [r.detail for r in gate_results(metrics, gates) if not r.passed]


def champion_gates(
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    max_regression: Mapping[str, float],
    champion_label: str,
) -> list[GateResult]:
    """ "Not worse than the champion by more than X", per metric, both scored on the same rows."""
    results = []
    for metric, allowed in max_regression.items():
        if metric not in candidate or metric not in champion:
            known = ", ".join(sorted(candidate))
            results.append(
                GateResult(
                    f"{metric} vs {champion_label}", False, f"{metric}: no such metric (known: {known})"
                )
            )
            continue
        up = higher_is_better(metric)
        worse_by = (champion[metric] - candidate[metric]) if up else (candidate[metric] - champion[metric])
        passed = bool(worse_by <= allowed)  # NaN -> False
        detail = (
            f"{metric} = {candidate[metric]:.4f} vs {champion_label} {champion[metric]:.4f} "
            f"({'worse' if worse_by > 0 else 'better'} by {abs(worse_by):.4f}; "
            f"at most {allowed:g} worse allowed)"
        )
        results.append(GateResult(f"{metric} vs {champion_label} (max {allowed:g} worse)", passed, detail))
    return results
