"""The label and the split of the features stage, over Ray Data without collecting rows, or over one
pyarrow Table in this process: the same kernels either way (``raymlops.data.frames``); each function
hands back what it is given (Datasets for a Dataset, Tables for a Table).

- ``label_summary``: the label's rows, nulls and value counts, one summary per block merged here (a
  bounded object: value counts are kept for at most ``limit`` values).
- ``split_dataset``: ``features.split.kind`` time (by an instant column), or random, stratified and group
  from a seeded content hash (``hash_splits``). Every config mistake is a ConfigError naming the key.
- ``with_target``: the task's training target in the ``label`` column (0/1, a class index, the value).
"""

from __future__ import annotations

import pickle
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from raymlops.data.frames import frame
from raymlops.data.hash_splits import hash_split
from raymlops.data.splits import parse_instant, time_split
from raymlops.errors import ConfigError
from raymlops.tasks.base import Task
from raymlops.tasks.infer import LabelSummary, summarize_label

__all__ = ["LABEL", "SPLIT_KINDS", "check_label_column", "drop_null_labels", "label_summary", "split_dataset"]

LABEL = "label"  # the target column every later stage reads
SPLIT_KINDS = ("time", "random", "stratified", "group")


def check_label_column(schema: pa.Schema | None, column: str) -> None:
    """Fail before any Ray task when the label column is not in the table."""
    if schema is not None and column not in schema.names:
        raise ConfigError(
            "features.label.column",
            f"{column!r} is not a column of the data: pick one of them.",
            schema.names,
        )


def _drop_nulls(batch: pa.Table, column: str) -> pa.Table:
    return batch.filter(pc.is_valid(batch[column]))


def drop_null_labels(ds: Any, column: str) -> Any:
    """Rows whose label is null cannot be learnt from (e.g. cancelled flights): dropped."""
    return frame(ds).map(partial(_drop_nulls, column=column)).data


def _summary_block(batch: pa.Table, column: str, limit: int) -> pa.Table:
    return pa.table({"summary": [pickle.dumps(summarize_label(batch, column, limit))]})


def label_summary(ds: Any, column: str, limit: int) -> LabelSummary:
    """The label's summary over every block of ``ds``, merged in this process (bounded in size)."""
    merged: LabelSummary | None = None
    for part in frame(ds).partials(partial(_summary_block, column=column, limit=limit)):
        for blob in part["summary"].to_pylist():
            block = pickle.loads(blob)  # written by the task above, in this run
            merged = block if merged is None else merged.merge(block)
    if merged is None:  # no rows at all
        kind = "other"
        merged = LabelSummary(kind, limit, counts={})
    return merged


def _time_split(ds: Any, cfg: Any) -> tuple[Any, Any, Any]:
    column = cfg.time_column
    if not column:
        raise ConfigError(
            "features.split.time_column",
            "is not set: name the instant column, or use features.split.kind=random|stratified|group "
            "for a table without one.",
        )
    names = frame(ds).column_names()
    if names and column not in names:
        raise ConfigError("features.split.time_column", f"{column!r} is not a column of the data.", names)
    for key in ("valid_start", "test_start"):
        if not cfg.get(key):
            raise ConfigError(f"features.split.{key}", "is required with features.split.kind=time.")
    valid_start = parse_instant(str(cfg.valid_start), "features.split.valid_start")
    test_start = parse_instant(str(cfg.test_start), "features.split.test_start")
    return time_split(ds, column, valid_start, test_start)


def split_dataset(ds: Any, cfg: Any, label: str, summary_limit: int) -> tuple[Any, Any, Any]:
    """(train, valid, test) materialized, by ``features.split`` (``cfg``); ``ds`` has no null labels.

    Raises:
        ConfigError: an unknown kind, a missing column, a stratified split over a label with more than
            ``summary_limit`` values, or a split left empty (with the dates and the column's range).
    """
    kind = str(cfg.get("kind", "time"))
    if kind not in SPLIT_KINDS:
        raise ConfigError("features.split.kind", f"{kind!r} is not a split kind.", list(SPLIT_KINDS))
    if kind == "time":
        splits = _time_split(ds, cfg)
    else:
        if kind == "stratified" and label_summary(ds, label, summary_limit).counts is None:
            raise ConfigError(
                "features.split.kind",
                f"stratified keeps each class's share, but {label!r} has more than {summary_limit} values "
                "(a numeric target): use features.split.kind=random.",
            )
        group = cfg.get("group_column")
        splits = hash_split(
            ds,
            kind,
            list(cfg.get("fractions", [0.8, 0.1, 0.1])),
            int(cfg.get("seed", 42)),
            label=label,
            group_column=str(group) if group else None,
        )
    materialized = tuple(frame(s).materialize() for s in splits)
    rows = dict(zip(("train", "valid", "test"), (s.count() for s in materialized), strict=True))
    empty = [name for name, n in rows.items() if n == 0]
    if len(empty) == len(rows):  # only rows with a label reach the split
        raise ConfigError(
            "features.label.column", f"{label!r} is null in every row of the data: pick the label column."
        )
    if empty:
        if kind == "time":
            column = cfg.time_column
            low, high = column_range(ds, column)
            raise ConfigError(
                "features.split",
                f"split(s) {empty} are empty (rows {rows}) with valid_start={cfg.valid_start} and "
                f"test_start={cfg.test_start}, while {column} runs from {low} to {high}: move the dates "
                "inside that range.",
            )
        raise ConfigError(
            "features.split.fractions",
            f"split(s) {empty} are empty (rows {rows}) with fractions {list(cfg.fractions)}: the table is "
            "too small for them; raise the empty split's fraction.",
        )
    return tuple(s.data for s in materialized)


def _range_block(batch: pa.Table, column: str) -> pa.Table:
    span = pc.min_max(batch[column])
    return pa.table({"min": [span["min"]], "max": [span["max"]]}) if batch.num_rows else batch.select([])


def column_range(ds: Any, column: str) -> tuple[Any, Any]:
    """The least and greatest value of ``column`` (None, None without values)."""
    lows, highs = [], []
    for part in frame(ds).partials(partial(_range_block, column=column)):
        if part.num_columns:
            lows += [v for v in part["min"].to_pylist() if v is not None]
            highs += [v for v in part["max"].to_pylist() if v is not None]
    return (min(lows) if lows else None, max(highs) if highs else None)


def _target(batch: pa.Table, column: str, task: Task) -> pa.Table:
    values = batch[column].combine_chunks() if isinstance(batch[column], pa.ChunkedArray) else batch[column]
    target = task.target(values)
    if LABEL in batch.column_names:  # the label column may itself be called "label"
        return batch.set_column(batch.column_names.index(LABEL), LABEL, target)
    return batch.append_column(LABEL, target)


def with_target(ds: Any, column: str, task: Task) -> Any:
    """``ds`` with the task's target in :data:`LABEL` (float32)."""
    return frame(ds).map(partial(_target, column=column, task=task)).data
