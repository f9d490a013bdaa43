"""Metrics per slice, and the gates that decide whether a model may be registered: absolute thresholds,
"better than the constant baseline", and "not worse than the champion by more than X".

The metrics themselves and their directions belong to the task (``raymlops.tasks``): this module only
applies them. A gate or tolerance may name ``<split>/primary``, the task's primary metric (AUC for binary,
macro-F1 for multiclass, RMSE for regression), so one config reads right for every task.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.errors import ConfigError

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = [
    "BASELINE",
    "GateResult",
    "binary_metrics",
    "champion_gates",
    "check_gates",
    "gate_results",
    "parse_gate",
    "resolve_metric",
    "slice_metrics",
]

BASELINE = "baseline"  # a gate's bound: the same metric of the constant baseline ("test/auc > baseline")
PRIMARY = "primary"  # a metric's name: the task's primary metric ("test/primary")


def binary_metrics(
    y_true: np.ndarray, proba: np.ndarray, split: str, threshold: float = 0.5
) -> dict[str, float]:
    """ROC AUC, accuracy, log loss, positive rate, named ``<split>/<metric>``: the binary task's metrics
    (kept for callers that score probabilities without a task at hand)."""
    from raymlops.tasks.binary import BinaryTask

    return BinaryTask(threshold=0.0, decision=threshold).metrics(y_true, proba, split)


def resolve_metric(name: str, task: Task | None) -> str:
    """``<split>/primary`` -> ``<split>/<task.primary_metric>``; other names as they are."""
    split, _, leaf = name.rpartition("/")
    if leaf != PRIMARY:
        return name
    if task is None:
        raise ConfigError("evaluate.gates", f"{name!r} names the primary metric, but no task is known here.")
    return f"{split}/{task.primary_metric}"


def slice_metrics(
    table: pa.Table,
    y_true: np.ndarray,
    pred: np.ndarray,
    *,
    task: Task,
    columns: Sequence[str],
    split: str,
    min_rows: int = 30,
    max_values: int = 20,
) -> dict[str, list[dict[str, Any]]]:
    """The task's metrics per value of each slice column (most frequent ``max_values`` values), with counts.

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
                metrics = task.metrics(y_true[mask], pred[mask], split)
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


_NUMBER = r"[-+]?[\d.]+(?:e[-+]?\d+)?"
_GATE = re.compile(
    rf"^\s*(?P<metric>[\w/.-]+)\s*(?P<op>>=|<=|>|<)\s*(?P<bound>{_NUMBER}|{BASELINE})\s*$", re.IGNORECASE
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}


def parse_gate(expression: str) -> tuple[str, str, float | str]:
    """``"test/auc >= 0.6"`` -> ``("test/auc", ">=", 0.6)``; ``"test/rmse < baseline"`` ->
    ``("test/rmse", "<", "baseline")``; anything else is a ConfigError."""
    match = _GATE.match(expression)
    if match is None:
        raise ConfigError(
            "evaluate.gates",
            f"{expression!r} is not a gate such as 'test/auc >= 0.6' or 'test/macro_f1 > baseline'.",
        )
    bound = match["bound"]
    return match["metric"], match["op"], BASELINE if bound.lower() == BASELINE else float(bound)


def gate_results(
    metrics: Mapping[str, float],
    gates: Iterable[str],
    *,
    baseline: Mapping[str, float] | None = None,
    task: Task | None = None,
) -> list[GateResult]:
    """Every absolute gate with its outcome; an unknown metric name fails, listing the known ones.

    A ``baseline`` bound compares with the same metric in ``baseline`` (the constant predictor's);
    ``<split>/primary`` names ``task``'s primary metric.
    """
    results = []
    for expression in gates:
        name, op, bound = parse_gate(expression)
        name = resolve_metric(name, task)
        if bound == BASELINE:
            gate = f"{name} {op} baseline"
            reference = (baseline or {}).get(name)
            if reference is None:
                results.append(GateResult(gate, False, f"{name}: the baseline has no such metric"))
                continue
            limit, shown = float(reference), f"baseline {float(reference):.4f}"
        else:
            limit = float(bound)
            gate, shown = f"{name} {op} {limit:g}", f"{limit}"
        if name not in metrics:
            results.append(
                GateResult(gate, False, f"{name}: no such metric (known: {', '.join(sorted(metrics))})")
            )
        else:
            passed = _OPS[op](metrics[name], limit)  # NaN fails every comparison
            value = f"{name} = {metrics[name]:.4f}"
            detail = f"{value} ({op} {shown})" if passed else f"{value}, must be {op} {shown}"
            results.append(GateResult(gate, passed, detail))
    return results


def check_gates(
    metrics: Mapping[str, float],
    gates: Iterable[str],
    *,
    baseline: Mapping[str, float] | None = None,
    task: Task | None = None,
) -> list[str]:
    """Failed gates as messages; an unknown metric name is itself a failure listing the known ones."""
    return [r.detail for r in gate_results(metrics, gates, baseline=baseline, task=task) if not r.passed]


def _higher_is_better(task: Task, metric: str) -> bool:
    try:
        return task.higher_is_better(metric)
    except KeyError:
        raise ConfigError(
            "evaluate.champion.max_regression",
            f"{metric!r} has no known direction for a {task.name} task.",
            sorted(task.directions),
        ) from None


def champion_gates(
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
    max_regression: Mapping[str, float],
    champion_label: str,
    task: Task,
) -> list[GateResult]:
    """ "Not worse than the champion by more than X", per metric, both scored on the same rows; which way
    is worse is ``task``'s metric direction."""
    results = []
    for key, allowed in max_regression.items():
        metric = resolve_metric(key, task)
        if metric not in candidate or metric not in champion:
            known = ", ".join(sorted(candidate))
            results.append(
                GateResult(
                    f"{metric} vs {champion_label}", False, f"{metric}: no such metric (known: {known})"
                )
            )
            continue
        up = _higher_is_better(task, metric)
        worse_by = (champion[metric] - candidate[metric]) if up else (candidate[metric] - champion[metric])
        passed = bool(worse_by <= allowed)  # NaN -> False
        detail = (
            f"{metric} = {candidate[metric]:.4f} vs {champion_label} {champion[metric]:.4f} "
            f"({'worse' if worse_by > 0 else 'better'} by {abs(worse_by):.4f}; "
            f"at most {allowed:g} worse allowed)"
        )
        results.append(GateResult(f"{metric} vs {champion_label} (max {allowed:g} worse)", passed, detail))
    return results
