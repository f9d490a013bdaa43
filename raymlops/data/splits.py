"""The split by time, vectorised in pyarrow per block of a Ray Dataset or on one pyarrow Table
(``raymlops.data.frames``; hash splits: hash_splits.py)."""

from __future__ import annotations

import datetime as dt
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from raymlops.data.frames import frame
from raymlops.errors import ConfigError

__all__ = ["parse_instant", "time_split"]


def parse_instant(text: str, key: str) -> dt.datetime:
    """An ISO date or datetime; naive values are taken as UTC."""
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(key, f"{text!r} is not an ISO date such as 2013-10-01.") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def _between(batch: pa.Table, column: str, start: dt.datetime | None, end: dt.datetime | None) -> pa.Table:
    values = batch[column]
    if pa.types.is_timestamp(values.type) and values.type.tz is None:
        start = start.replace(tzinfo=None) if start else None
        end = end.replace(tzinfo=None) if end else None
    mask = pa.array([True] * batch.num_rows)
    if start is not None:
        mask = pc.and_(mask, pc.greater_equal(values, pa.scalar(start, values.type)))
    if end is not None:
        mask = pc.and_(mask, pc.less(values, pa.scalar(end, values.type)))
    return batch.filter(mask)


def time_split(ds, column: str, valid_start: dt.datetime, test_start: dt.datetime) -> tuple:
    """(train, valid, test): rows before ``valid_start``, then up to ``test_start``, then the rest."""
    if not valid_start < test_start:
        raise ConfigError(
            "features.split", f"valid_start {valid_start} must be before test_start {test_start}."
        )
    bounds = {"train": (None, valid_start), "valid": (valid_start, test_start), "test": (test_start, None)}
    return tuple(
        frame(ds).map(partial(_between, column=column, start=lo, end=hi)).data for lo, hi in bounds.values()
    )
