"""Point-in-time (as-of) joins of rows onto feature tables, distributed with Ray.

Semantics, per row and view: among the view's rows with the same entity keys and a timestamp at or
before the row's event time, take the latest; use it only if ``row time - feature time <= ttl``
(no TTL: any age). Equal timestamps count as "at or before" (a value stamped 10:00 is known at 10:00).
Several feature rows with the same keys and timestamp: the last one in the feature table's order.
Rows without a match (unknown or null key, nothing early enough, too old) get nulls, which the
preprocessing imputes like any missing value. Static views (no timestamp) join on the keys alone.

Distribution: a small feature table is broadcast (put once in the object store, joined onto every
block of rows in place); a large one is hash-partitioned on the entity keys together with the rows,
and each of the N partitions is joined by one task (a hand-written map/reduce shuffle with Ray tasks:
Ray Data has no as-of join). The per-partition kernel :func:`asof_join_table` is pure pyarrow/numpy:
one stable sort of the feature rows by (key, time) and one ``np.searchsorted`` for all rows.
The shuffled join returns rows grouped by partition, not in input order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.errors import ConfigError

if TYPE_CHECKING:
    import ray.data

    from raymlops.features.views import FeatureView

__all__ = [
    "JoinSpec",
    "asof_join_table",
    "default_partitions",
    "hash_partition",
    "join_views",
    "partition_ids",
    "pit_join",
]

logger = logging.getLogger(__name__)

BROADCAST_MAX_ROWS = 2_000_000  # feature tables up to this size are broadcast instead of shuffled
_UNIT_RANK = {"s": 0, "ms": 1, "us": 2, "ns": 3}


@dataclass(frozen=True)
class JoinSpec:
    """What to join: ``entities`` in both tables, rows' ``event_time``, the features' ``feature_time``."""

    entities: tuple[str, ...]
    event_time: str
    feature_time: str | None  # None: a static table, joined on the keys alone
    features: tuple[str, ...]
    ttl: timedelta | None = None

    @classmethod
    def for_view(cls, view: FeatureView, event_time: str) -> JoinSpec:
        return cls(tuple(view.entities), event_time, view.timestamp, tuple(view.features), view.ttl_delta)


# ---------------------------------------------------------------- the per-partition kernel


def asof_join_table(rows: pa.Table, features: pa.Table, spec: JoinSpec) -> pa.Table:
    """``rows`` with ``spec.features`` appended, point-in-time correct (single process, vectorised)."""
    clash = sorted(set(spec.features) & set(rows.column_names))
    if clash:
        raise ConfigError("features.views", f"feature column(s) {clash} already exist in the rows.")
    left_codes, right_codes = _joint_codes(rows, features, spec.entities)
    if spec.feature_time is None:
        index = _latest_per_key(left_codes, right_codes)
    else:
        index = _asof_index(rows, features, left_codes, right_codes, spec)
    taken = features.select(list(spec.features)).take(index)
    for name in spec.features:
        rows = rows.append_column(name, taken[name])
    return rows


def _joint_codes(left: pa.Table, right: pa.Table, entities: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Int64 codes equal across both tables for equal keys; -1 where any key is null."""
    n = left.num_rows
    codes = np.zeros(n + right.num_rows, dtype=np.int64)
    null = np.zeros(n + right.num_rows, dtype=bool)
    for name in entities:
        lcol, rcol = left[name], right[name]
        if rcol.type != lcol.type:  # e.g. an all-null block: take the other side's type
            if pa.types.is_null(lcol.type):
                lcol = pc.cast(lcol, rcol.type)
            else:
                rcol = pc.cast(rcol, lcol.type)
        both = pa.chunked_array([*lcol.chunks, *rcol.chunks], type=lcol.type)
        encoded = pc.dictionary_encode(both).combine_chunks()
        index = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        null |= index < 0
        # Mixed radix: fits int64 for any realistic key space (the product of distinct values per column).
        codes = codes * (len(encoded.dictionary) + 1) + index + 1
    codes[null] = -1
    return codes[:n], codes[n:]


def _latest_per_key(left_codes: np.ndarray, right_codes: np.ndarray) -> pa.Array:
    if len(right_codes) == 0:
        return pa.nulls(len(left_codes), pa.int64())
    order = np.argsort(right_codes, kind="stable")  # the last row of each key wins, as for ties in time
    sorted_codes = right_codes[order]
    pos = np.searchsorted(sorted_codes, left_codes, side="right") - 1
    pos_ok = np.clip(pos, 0, None)
    found = (pos >= 0) & (left_codes >= 0) & (sorted_codes[pos_ok] == left_codes)
    return pa.array(order[pos_ok], mask=~found)


def _ticks(column: pa.ChunkedArray, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ticks in ``unit``, valid mask); naive timestamps are taken as UTC."""
    if not pa.types.is_timestamp(column.type):
        raise ConfigError("features.event_time", f"column of type {column.type} is not a timestamp.")
    ints = pc.cast(pc.cast(column, pa.timestamp(unit, column.type.tz)), pa.int64())
    valid = pc.is_valid(ints).to_numpy(zero_copy_only=False)
    return pc.fill_null(ints, 0).to_numpy(zero_copy_only=False), valid


def _asof_index(
    rows: pa.Table, features: pa.Table, left_codes: np.ndarray, right_codes: np.ndarray, spec: JoinSpec
) -> pa.Array:
    assert spec.feature_time is not None
    lcol, rcol = rows[spec.event_time], features[spec.feature_time]
    # The finer unit of the two: flooring a 10:00:00.5 feature to 10:00:00 would let it join a 10:00:00 row.
    units = [t.unit for t in (lcol.type, rcol.type) if pa.types.is_timestamp(t)]
    unit = max(units, key=_UNIT_RANK.__getitem__) if units else "s"
    lt, lvalid = _ticks(lcol, unit)
    rt, rvalid = _ticks(rcol, unit)
    keep = np.flatnonzero(rvalid & (right_codes >= 0))
    rc, rt = right_codes[keep], rt[keep]
    order = np.lexsort((rt, rc))  # stable: among equal (key, time) the last in table order wins
    rc, rt, source_row = rc[order], rt[order], keep[order]
    if len(rc) == 0:
        return pa.nulls(rows.num_rows, pa.int64())
    rkey, lkey = _ordered_keys(rc, rt, left_codes, lt)
    pos = np.searchsorted(rkey, lkey, side="right") - 1
    pos_ok = np.clip(pos, 0, None)
    found = (pos >= 0) & lvalid & (left_codes >= 0) & (rc[pos_ok] == left_codes)
    if spec.ttl is not None:
        ttl = round(spec.ttl.total_seconds() * 10 ** (3 * _UNIT_RANK[unit]))
        found &= lt - rt[pos_ok] <= ttl
    return pa.array(source_row[pos_ok], mask=~found)


def _ordered_keys(
    rc: np.ndarray, rt: np.ndarray, lc: np.ndarray, lt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One int64 per (code, time) that orders like the pair, so that one searchsorted does the as-of."""
    lo = min(int(rt.min()), int(lt.min()) if len(lt) else int(rt.min()))
    hi = max(int(rt.max()), int(lt.max()) if len(lt) else int(rt.max()))
    span = hi - lo + 1
    top = int(max(rc.max(), lc.max() if len(lc) else 0)) + 2
    if top * span < 2**62:
        return (rc + 1) * span + (rt - lo), (lc + 1) * span + (lt - lo)
    # Times too far apart (e.g. nanoseconds): replace them by their rank among all times.
    ranks = np.unique(np.concatenate([rt, lt]), return_inverse=True)[1].astype(np.int64)
    span = int(ranks.max()) + 1
    rr, lr = ranks[: len(rt)], ranks[len(rt) :]
    return (rc + 1) * span + rr, (lc + 1) * span + lr


# ---------------------------------------------------------------- hash partitioning


def partition_ids(table: pa.Table, entities: tuple[str, ...], num_partitions: int) -> np.ndarray:
    """A partition per row from a stable hash of the keys (the same in every process)."""
    import pandas as pd

    combined = np.zeros(table.num_rows, dtype=np.uint64)
    if table.num_rows == 0:
        return combined.astype(np.int64)
    for name in entities:
        # Hash each distinct value once, then spread by the dictionary indices.
        encoded = pc.dictionary_encode(table[name]).combine_chunks()
        values = encoded.dictionary.to_numpy(zero_copy_only=False)
        hashes = np.append(pd.util.hash_array(np.asarray(values, dtype=object)), np.uint64(0))
        index = pc.fill_null(encoded.indices, len(values)).to_numpy(zero_copy_only=False)
        combined = combined * np.uint64(1_000_003) + hashes[index]
    return (combined % np.uint64(num_partitions)).astype(np.int64)


def hash_partition(ds: ray.data.Dataset, entities: tuple[str, ...], num_partitions: int) -> list[list[Any]]:
    """Per block of ``ds``, ``num_partitions`` object refs of its rows split by key hash (Ray tasks)."""
    import ray

    split = ray.remote(_split).options(num_returns=num_partitions)
    return [_as_list(split.remote(ref, entities, num_partitions)) for ref in ds.to_arrow_refs()]


def default_partitions() -> int:
    """Two partitions per CPU of the cluster: every CPU busy, stragglers evened out."""
    import ray

    return max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))


def _split(table: pa.Table, entities: tuple[str, ...], num_partitions: int) -> list[pa.Table]:
    part = partition_ids(table, entities, num_partitions)
    order = np.argsort(part, kind="stable")
    bounds = np.searchsorted(part[order], np.arange(num_partitions + 1))
    ordered = table.take(order)
    return [ordered.slice(bounds[i], bounds[i + 1] - bounds[i]) for i in range(num_partitions)]


def _join_partition(spec: JoinSpec, num_left: int, *parts: pa.Table) -> pa.Table:
    left = _concat(parts[:num_left])
    right = _concat(parts[num_left:])
    return asof_join_table(left, right, spec)


def _concat(tables: Any) -> pa.Table:
    tables = [t for t in tables if t is not None]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


# ---------------------------------------------------------------- the distributed join


class _BroadcastJoin:
    """Map function: join each block of rows onto the broadcast feature table."""

    def __init__(self, features_ref: Any, spec: JoinSpec) -> None:
        self.features_ref, self.spec = features_ref, spec

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        return asof_join_table(batch, ray.get(self.features_ref), self.spec)


def pit_join(
    rows: ray.data.Dataset,
    features: ray.data.Dataset | pa.Table,
    spec: JoinSpec,
    *,
    strategy: str = "auto",
    num_partitions: int | None = None,
) -> ray.data.Dataset:
    """``rows`` with ``spec.features`` joined point-in-time (see the module docstring).

    ``strategy``: ``broadcast`` | ``shuffle`` | ``auto`` (broadcast up to ``BROADCAST_MAX_ROWS`` rows).
    """
    import ray
    import ray.data

    if strategy not in ("auto", "broadcast", "shuffle"):
        raise ConfigError(
            "strategy", f"unknown join strategy {strategy!r}.", ["auto", "broadcast", "shuffle"]
        )
    if strategy == "auto":
        size = features.num_rows if isinstance(features, pa.Table) else features.count()
        strategy = "broadcast" if size <= BROADCAST_MAX_ROWS else "shuffle"
    if strategy == "broadcast":
        table = features if isinstance(features, pa.Table) else _collect(features)
        return rows.map_batches(
            _BroadcastJoin(ray.put(table), spec),
            batch_format="pyarrow",
            batch_size=None,
            zero_copy_batch=True,
        )
    num_partitions = num_partitions or default_partitions()
    feature_ds = ray.data.from_arrow(features) if isinstance(features, pa.Table) else features
    join = ray.remote(_join_partition)
    left = hash_partition(rows, spec.entities, num_partitions)
    right = hash_partition(feature_ds, spec.entities, num_partitions)
    if not left:
        return rows
    if not right:  # no feature rows at all: an empty table of the right schema joins to nulls
        right = [[ray.put(feature_ds.schema().base_schema.empty_table())] * num_partitions]
    joined = [
        join.remote(spec, len(left), *(parts[i] for parts in left), *(parts[i] for parts in right))
        for i in range(num_partitions)
    ]
    return ray.data.from_arrow_refs(joined)


def _as_list(refs: Any) -> list[Any]:
    return refs if isinstance(refs, list) else [refs]


def _collect(ds: ray.data.Dataset) -> pa.Table:
    """A feature table small enough to broadcast, gathered from its blocks."""
    import ray

    tables = [t for t in ray.get(ds.to_arrow_refs()) if t.num_rows]
    return (
        pa.concat_tables(tables, promote_options="permissive")
        if tables
        else ds.schema().base_schema.empty_table()
    )


def join_views(
    rows: ray.data.Dataset,
    views: list[FeatureView],
    event_time: str,
    *,
    versions: dict[str, Any] | None = None,
    strategy: str = "auto",
) -> tuple[ray.data.Dataset, dict[str, str]]:
    """Join every view onto ``rows`` as of ``event_time``; returns the rows and each view's data version."""
    from functools import partial

    from raymlops.features.views import derive_at_event, feature_table, resolve_view

    resolved: dict[str, str] = {}
    for view in views:
        version = (versions or {}).get(view.name) or resolve_view(view)
        resolved[view.name] = str(version)
        features = feature_table(view, version)
        rows = pit_join(rows, features, JoinSpec.for_view(view, event_time), strategy=strategy)
        if view.age_at_event:
            rows = rows.map_batches(
                partial(derive_at_event, view=view, event_time=event_time),
                batch_format="pyarrow",
                batch_size=None,
                zero_copy_batch=True,
            )
        logger.info("pit join view=%s version=%s", view.name, version)
    return rows, resolved
