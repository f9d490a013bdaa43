"""Materialize feature views into the online store: the latest row per entity, as of an instant.

What the store holds for a view after ``materialize_view(view, store, as_of=T)`` is exactly what the
offline point-in-time join gives a row with event time ``T``: per entity, the row with the latest
event time ``<= T``, and only if that time is within the view's TTL of ``T`` (entities whose latest row
is older are not held). A static view (no timestamp) holds every entity, always.

Incremental: a view's state in the store (``MaterializationState``) records the source's data version
and the newest event time written (the watermark). The next run reads the source's current version but
considers only rows newer than the watermark (up to its own ``as_of``), upserts them (newest wins) and
drops entities that fell out of the TTL. A full rebuild happens on the first run, with ``full=True``, or
when ``as_of`` is earlier than the state's (the store never shows a later past than asked for).

Distributed: each Ray Data block is reduced to its latest row per entity in pyarrow; only those
(at most one row per entity and block) reach the driver, which takes the latest per entity across
blocks and writes them in chunks.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.features.online.base import FeatureRow, MaterializationState, OnlineStore, entity_key

if TYPE_CHECKING:
    from raymlops.features.views import FeatureView

__all__ = [
    "TS",
    "ensure_materialized",
    "latest_per_entity",
    "materialize",
    "materialize_view",
    "merge_latest",
    "to_micros",
    "ttl_floor",
]

logger = logging.getLogger(__name__)

TS = "_event_us"  # the event time as int64 microseconds (UTC), added to the reduced tables
_WRITE_CHUNK = 5000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROS = {"s": 10**6, "ms": 10**3, "us": 1, "ns": 10**-3}


def to_micros(instant: dt.datetime) -> int:
    """A datetime (naive = UTC) as microseconds since the epoch."""
    aware = instant if instant.tzinfo else instant.replace(tzinfo=dt.timezone.utc)
    return (aware - _EPOCH) // dt.timedelta(microseconds=1)  # exact, unlike float timestamp()


def _micros_of(iso: str) -> int:
    return to_micros(dt.datetime.fromisoformat(iso))


def _iso(micros: int) -> str:
    return dt.datetime.fromtimestamp(micros / 1e6, dt.timezone.utc).isoformat()


def _event_micros(column: pa.ChunkedArray) -> pa.Array:
    """A timestamp column as int64 microseconds (UTC; Arrow stores every timestamp as UTC ticks)."""
    ticks = pc.cast(column, pa.int64())
    scale = _MICROS[column.type.unit]
    if scale == 1:
        return ticks
    if scale > 1:
        return pc.multiply(ticks, scale)
    return pc.divide(ticks, int(1 / scale))  # ns -> us, floor for positive instants


def latest_per_entity(
    batch: pa.Table, view: FeatureView, lower_us: int | None, upper_us: int | None
) -> pa.Table:
    """The latest row per entity of ``batch`` with event time in ``(lower_us, upper_us]``.

    Returns the entity columns, the features, and ``TS`` (int64 microseconds; 0 for a static view).
    Rows with a missing entity key or event time can never be looked up and are dropped.
    """
    columns = [*view.entities, *view.features]
    if view.timestamp is None:
        events = pa.array(np.zeros(batch.num_rows, dtype=np.int64))
    else:
        events = _event_micros(batch[view.timestamp])
    table = batch.select(columns).append_column(TS, events)
    valid = pc.is_valid(table[TS])
    for entity in view.entities:
        valid = pc.and_(valid, pc.is_valid(table[entity]))
    if lower_us is not None:
        valid = pc.and_(valid, pc.greater(table[TS], lower_us))
    if upper_us is not None:
        valid = pc.and_(valid, pc.less_equal(table[TS], upper_us))
    return _latest(table.filter(valid), view.entities, view.features)


def _latest(table: pa.Table, entities: Sequence[str], features: Sequence[str]) -> pa.Table:
    """The row with the largest ``TS`` per entity of a table holding ``TS``."""
    if table.num_rows == 0:
        return table
    # "last" over rows in a stable ascending sort is the latest row, and among rows with the same
    # time the last in table order, as in the offline join; "last" keeps order only single-threaded.
    ordered = table.sort_by([(TS, "ascending")])
    columns = [*features, TS]
    options = pc.ScalarAggregateOptions(skip_nulls=False)
    aggregated = ordered.group_by(list(entities), use_threads=False).aggregate(
        [(c, "last", options) for c in columns]
    )
    # group_by names its outputs "<column>_last" (aggregates first, keys last).
    return aggregated.select([f"{c}_last" for c in columns] + list(entities)).rename_columns(
        [*columns, *entities]
    )


def merge_latest(parts: Sequence[pa.Table], view: FeatureView) -> pa.Table:
    """The latest row per entity over several ``latest_per_entity`` results (of different blocks)."""
    return _latest(pa.concat_tables(parts, promote_options="permissive"), view.entities, view.features)


def ttl_floor(view: FeatureView, as_of_us: int) -> int | None:
    """The oldest event time (microseconds) still valid at ``as_of_us``; None: the view never expires."""
    ttl = view.ttl_delta
    if ttl is None or view.timestamp is None:
        return None
    return as_of_us - ttl // dt.timedelta(microseconds=1)


def _rows(latest: pa.Table, view: FeatureView) -> Iterator[FeatureRow]:
    """Store rows: entity key, event time, features (NaN as null: the graph imputes both alike)."""
    records = latest.to_pylist()
    for record in records:
        key = entity_key([record[e] for e in view.entities])
        if key is None:
            continue
        features = {
            f: None if isinstance(v := record[f], float) and math.isnan(v) else v for f in view.features
        }
        yield key, int(record[TS]), features


def materialize_view(
    view: FeatureView,
    store: OnlineStore,
    *,
    as_of: dt.datetime | None = None,
    full: bool = False,
    lakefs: Any = None,
    progress: Callable[[str], None] | None = None,
) -> MaterializationState:
    """Bring ``view``'s rows in ``store`` up to ``as_of`` (default: the newest event in its source).

    Returns the state recorded in the store. See the module docstring for the semantics.
    """
    import ray

    from raymlops.features.views import feature_table, resolve_view

    say = progress or (lambda line: logger.info("%s", line))
    started = time.monotonic()
    version = resolve_view(view, lakefs)
    previous = store.get_state(view.name)
    upper = None if as_of is None else to_micros(as_of)
    # An instant before the last run's: entities that expired since may be valid again, rebuild.
    rebuild = full or previous is None or (upper is not None and upper < _micros_of(previous.as_of))
    if view.timestamp is None and previous is not None and previous.source_version != str(version):
        rebuild = True  # a static view has no event time to be incremental on: rewrite it whole
    if view.timestamp is None and not rebuild:
        lower: int | None = 0  # nothing newer than "always" can appear without a new version
    else:
        lower = None if rebuild or previous is None else previous.watermark_us
    mode = "full" if rebuild else f"incremental after {_iso(lower or 0)}"
    say(f"{view.name}: reading {version} ({mode})")
    reduced = feature_table(view, version, lakefs).map_batches(
        partial(latest_per_entity, view=view, lower_us=lower, upper_us=upper),
        batch_format="pyarrow",
        batch_size=None,
    )
    parts = [p for p in ray.get(reduced.to_arrow_refs()) if p.num_rows]
    latest = merge_latest(parts, view) if parts else None
    kept = 0 if rebuild or previous is None else previous.watermark_us
    newest = int(pc.max(latest[TS]).as_py()) if latest is not None else 0
    watermark = max(newest, kept)  # the newest event time considered: the next run starts after it
    if upper is None:
        # No instant given: the store reflects the newest event in the source (data time, not wall
        # time: a historical dataset would otherwise be entirely out of its TTL); a static view, now.
        upper = watermark if view.timestamp is not None else to_micros(dt.datetime.now(dt.timezone.utc))
    floor = ttl_floor(view, upper)
    if latest is not None and floor is not None:
        latest = latest.filter(pc.greater_equal(latest[TS], floor))
    if rebuild:
        store.clear(view.name)
    written = 0
    total = 0 if latest is None else latest.num_rows
    if latest is not None:
        for start in range(0, total, _WRITE_CHUNK):
            written += store.write(view.name, _rows(latest.slice(start, _WRITE_CHUNK), view))
            if total > _WRITE_CHUNK:
                say(f"{view.name}: written {written}/{total} entities")
    expired = 0 if floor is None or rebuild else store.expire(view.name, floor)
    state = MaterializationState(
        view=view.name,
        source_version=str(version),
        as_of=_iso(upper),
        watermark_us=watermark,
        entities=store.count(view.name),
        rows_written=written,
        expired=expired,
        full=rebuild,
        materialized_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    store.put_state(state)
    say(
        f"{view.name}: as of {state.as_of}: {written} entities written, {expired} expired, "
        f"{state.entities} held ({time.monotonic() - started:.1f} s)"
    )
    return state


def materialize(
    views: Sequence[FeatureView],
    store: OnlineStore,
    *,
    as_of: dt.datetime | None = None,
    full: bool = False,
    lakefs: Any = None,
    progress: Callable[[str], None] | None = None,
) -> list[MaterializationState]:
    """``materialize_view`` for each view, in order."""
    return [
        materialize_view(v, store, as_of=as_of, full=full, lakefs=lakefs, progress=progress) for v in views
    ]


def ensure_materialized(
    views: Sequence[FeatureView],
    store: OnlineStore,
    *,
    lakefs: Any = None,
    progress: Callable[[str], None] | None = None,
) -> list[MaterializationState]:
    """Materialize the views the store has never seen (a first deploy of a model trained with them);
    views it already holds are left to ``features materialize`` and its schedule."""
    missing = [v for v in views if store.get_state(v.name) is None]
    return materialize(missing, store, lakefs=lakefs, progress=progress) if missing else []
