"""The label's summary (mergeable over blocks) and the task it asks for, with the config's mistakes named.

``features.task: auto`` reads the train split's label: bool or two values -> binary; strings or integers
with at most ``features.max_classes`` values -> multiclass; other numbers -> regression. Every mistake
is a ConfigError naming the key, the value and the fix, raised before any model trains.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raymlops.errors import ConfigError
from raymlops.tasks.base import Task
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.registry import TASKS, task_class
from raymlops.tasks.regression import RegressionTask

__all__ = ["LabelSummary", "resolve_task", "summarize_label"]


def _kind(type_: pa.DataType) -> str:
    if pa.types.is_boolean(type_):
        return "bool"
    if pa.types.is_integer(type_):
        return "integer"
    if pa.types.is_floating(type_) or pa.types.is_decimal(type_):
        return "float"
    if pa.types.is_dictionary(type_):
        return _kind(type_.value_type)
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "string"
    return "other"


@dataclass
class LabelSummary:
    """Rows, nulls and value counts of the label; ``counts`` is None past ``limit`` distinct values (a
    label with that many values is a regression target or a mistake, and its counts are not kept)."""

    kind: str
    limit: int
    rows: int = 0
    nulls: int = 0
    counts: dict[Any, int] | None = field(default_factory=dict)

    def merge(self, other: LabelSummary) -> LabelSummary:
        if self.counts is None or other.counts is None:
            counts = None
        else:
            merged = Counter(self.counts)
            merged.update(other.counts)
            counts = dict(merged) if len(merged) <= self.limit else None
        return LabelSummary(self.kind, self.limit, self.rows + other.rows, self.nulls + other.nulls, counts)

    @property
    def values(self) -> list[Any]:
        """The observed values, sorted (None when there are too many to keep)."""
        return sorted(self.counts, key=lambda v: (str(type(v)), v)) if self.counts is not None else []


def summarize_label(batch: pa.Table, column: str, limit: int) -> LabelSummary:
    """One block's label summary: the kernel Ray Data runs per block and ``merge`` combines."""
    values = batch[column]
    kind = _kind(values.type)
    nulls = values.null_count
    counts: dict[Any, int] | None = None
    if kind != "float":
        tallies = pc.value_counts(pc.drop_null(values).combine_chunks() if values.num_chunks else values)
        if len(tallies) <= limit:
            counts = {t["values"]: t["counts"] for t in tallies.to_pylist()}
    else:  # floats: counted only while few, so 0.0 / 1.0 labels still read as binary
        unique = pc.unique(pc.drop_null(values))
        if len(unique) <= limit:
            tallies = pc.value_counts(pc.drop_null(values))
            counts = {t["values"]: t["counts"] for t in tallies.to_pylist()}
    return LabelSummary(kind, limit, len(values), nulls, counts)


def _coerce(value: Any, summary: LabelSummary, key: str) -> Any:
    """``positive`` as written in YAML (often a string) in the label's own type."""
    for observed in summary.values:
        if str(observed) == str(value) or str(observed).lower() == str(value).lower() == "true":
            return observed
    raise ConfigError(
        key, f"{value!r} is not among the label's values {summary.values}: set it to one of them."
    )


def resolve_task(
    task: str,
    column: str,
    summary: LabelSummary,
    *,
    threshold: float | None = None,
    positive: Any = None,
    max_classes: int = 50,
) -> tuple[Task, str]:
    """The task for this label, and why (for the log, the lineage and the model card)."""
    if summary.rows == summary.nulls:
        raise ConfigError(
            "features.label.column",
            f"{column!r} is null in every row of the train split: pick the label column.",
        )
    if threshold is not None and positive is not None:
        raise ConfigError(
            "features.label", "set threshold (a numeric label) or positive (a class), not both."
        )
    if threshold is not None and summary.kind not in ("integer", "float"):
        raise ConfigError(
            "features.label.threshold",
            f"{threshold} needs a numeric label, but {column!r} holds {summary.kind} values "
            f"{summary.values[:10]}: drop the threshold, and set features.label.positive for a binary label.",
        )
    if task == "regression" and summary.kind not in ("integer", "float"):
        raise ConfigError(
            "features.task",
            f"regression needs a numeric label, but {column!r} holds {summary.kind} values "
            f"{summary.values[:10]}: use task multiclass or binary (or auto).",
        )
    if task not in (*TASKS, "auto") and ":" not in task:
        task_class(task)  # raises, naming the valid tasks
    if threshold is not None:
        return BinaryTask(threshold=float(threshold)), f"{column} > {threshold:g} (features.label.threshold)"
    distinct = summary.values
    if task == "auto":
        if summary.kind == "bool" or (summary.counts is not None and len(distinct) == 2):
            task = "binary"
            why = f"{column} has two values {distinct}"
        elif summary.kind in ("string", "other") or (
            summary.kind == "integer" and summary.counts is not None
        ):
            task = "multiclass"
            how_many = len(distinct) if summary.counts is not None else "too many"
            why = f"{column} holds {summary.kind} values, {how_many} distinct"
        else:
            task = "regression"
            why = f"{column} holds {summary.kind} numbers with more than two values"
    else:
        why = "features.task"
    if task in ("binary", "multiclass"):
        if summary.counts is None:
            raise ConfigError(
                "features.max_classes",
                f"{column!r} has more than {max_classes} distinct values: raise features.max_classes, "
                "or use task regression for a numeric target.",
            )
        if len(distinct) < 2:
            raise ConfigError(
                "features.label.column",
                f"{column!r} has one value only ({distinct}) in the train split: a model needs two classes.",
            )
    if task == "binary":
        if len(distinct) != 2:
            raise ConfigError(
                "features.task", f"binary needs two label values; {column!r} has {len(distinct)}: {distinct}."
            )
        if positive is not None:
            pos = _coerce(positive, summary, "features.label.positive")
        elif summary.kind == "bool" or set(distinct) == {0, 1}:
            pos = distinct[-1]  # True / 1
        else:  # two other values: the rarer one is the event of interest
            pos = min(distinct, key=lambda v: (summary.counts[v], str(v)))  # type: ignore[index]
            why += f"; positive class {pos!r} (the rarer; set features.label.positive to choose)"
        (neg,) = [v for v in distinct if v != pos]
        return BinaryTask(positive=pos, negative=neg), why
    if positive is not None:
        raise ConfigError("features.label.positive", f"{positive!r} applies to a binary task, not {task}.")
    if task == "multiclass":
        return MulticlassTask(classes=tuple(distinct)), why
    if task == "regression":
        return RegressionTask(), why
    return task_class(task)(), why
