"""The formatting the Markdown and HTML renderings of a model card share: numbers, deltas, tables."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from raymlops.evaluation.model_card.card import NOT_RECORDED, jsonable

METRICS_NOTE = "Baseline: a constant predictor scored on the same test split. "
CHAMPION_NOTE = "Champion: the current champion re-scored on the same test split."
NO_CHAMPION = f"Champion: {NOT_RECORDED}."

# Which way is better, by the metric's last name segment ("test/auc" -> "auc"); others are neutral.
HIGHER_IS_BETTER = frozenset(
    {"auc", "accuracy", "f1", "precision", "recall", "r2", "average_precision", "pr_auc", "ap"}
)
LOWER_IS_BETTER = frozenset({"logloss", "loss", "rmse", "mse", "mae", "mape", "brier", "error", "ece"})


def is_count(name: str) -> bool:
    return name == "rows" or name.endswith("/rows") or name.endswith("_rows")


def fmt(value: Any, count: bool = False) -> str:
    """4 decimals for floats, whole numbers with separators for ints and counts, n/a for None/NaN."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "n/a"
        if math.isinf(number):
            return "∞" if number > 0 else "-∞"
        if count and number.is_integer():
            return f"{int(number):,}"
        return f"{number:.4f}"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(jsonable(value), ensure_ascii=False)
    return str(value)


def delta(value: Any, reference: Any) -> float | None:
    if not isinstance(value, numbers.Real) or not isinstance(reference, numbers.Real):
        return None
    diff = float(value) - float(reference)
    return diff if math.isfinite(diff) else None


def fmt_delta(diff: float | None) -> str:
    return "n/a" if diff is None else f"{diff:+.4f}"


def direction(name: str, diff: float | None, directions: Mapping[str, str] | None = None) -> str:
    """'better', 'worse' or '' for a change in metric ``name``; ``directions`` (the task's: metric ->
    "higher" | "lower") first, then the usual names."""
    if diff is None or diff == 0:
        return ""
    leaf = name.rsplit("/", 1)[-1].lower()
    known = (directions or {}).get(leaf)
    if known is not None:
        return "better" if (diff > 0) == (known == "higher") else "worse"
    if leaf in HIGHER_IS_BETTER:
        return "better" if diff > 0 else "worse"
    if leaf in LOWER_IS_BETTER:
        return "better" if diff < 0 else "worse"
    return ""


def union(keys: Iterable[Iterable[str]]) -> list[str]:
    seen: dict[str, None] = {}
    for group in keys:
        for key in group:
            seen.setdefault(key, None)
    return list(seen)


def slice_metrics(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return [k for k in union(row.keys() for row in rows) if k not in ("value", "rows")]


def is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def table_rows(
    data: Mapping[str, Any],
) -> tuple[list[str], list[bool], list[tuple[str, dict[str, Any]]]]:
    """A generic ``name -> value`` mapping as a table: nested mappings spread into columns.

    Returns the columns, whether each holds numbers only (right-aligned), and the rows.
    """
    columns = union(v.keys() for v in data.values() if isinstance(v, Mapping))
    if any(not isinstance(v, Mapping) for v in data.values()):
        columns.append("value")
    rows = [(str(k), dict(v) if isinstance(v, Mapping) else {"value": v}) for k, v in data.items()]
    numeric = [
        all(is_number(values[c]) or values[c] is None for _, values in rows if c in values) for c in columns
    ]
    return columns, numeric, rows


def sorted_shap(shap: Mapping[str, Any]) -> list[tuple[str, Any]]:
    def key(item: tuple[str, Any]) -> float:
        value = item[1]
        if isinstance(value, numbers.Real) and not math.isnan(float(value)):
            return -float(value)
        return math.inf

    return sorted(dict(shap.get("mean_abs") or {}).items(), key=key)


def time_range(training: Mapping[str, Any]) -> str | None:
    span = training.get("time_range")
    if not span or not (span.get("start") or span.get("end")):
        return None
    return f"{span.get('start') or 'n/a'} → {span.get('end') or 'n/a'}"


def total_rows(rows: Mapping[str, Any]) -> int:
    return sum(int(float(v)) for v in rows.values() if is_number(v))


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def verdict(passed: bool | None) -> tuple[str, str]:
    """(css class, label) of the gate verdict."""
    if passed is None:
        return "none", "NO GATES"
    return ("pass", "PASS") if passed else ("fail", "FAIL")


def better_way(name: str, directions: Mapping[str, str]) -> str:
    """'higher', 'lower' or '' (counts and shares): which way metric ``name`` is better, for the table."""
    return str(directions.get(name.rsplit("/", 1)[-1], ""))


def task_facts(task: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The task section's (label, text) rows: its name, why, and what was learnt about the label."""
    names = {
        "task": "Task",
        "why": "Why",
        "classes": "Classes",
        "positive": "Positive class",
        "negative": "Negative class",
        "threshold": "Label threshold",
        "decision": "Decision threshold",
        "loss": "Training loss",
    }
    rows = [(names.get(k, k), _task_value(v)) for k, v in task.items()]
    order = list(names.values())
    return sorted(rows, key=lambda r: order.index(r[0]) if r[0] in order else len(order))


def _task_value(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{float(value):g}"
    return fmt(value)
