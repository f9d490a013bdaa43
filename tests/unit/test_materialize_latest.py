"""Materialization's reduction (pure pyarrow, no Ray): what the store gets for a view as of T equals the
offline point-in-time join of (entity, T), whichever way the source is split into blocks."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest

from raymlops.features.materialize import TS, latest_per_entity, merge_latest, to_micros, ttl_floor
from raymlops.features.pit_join import JoinSpec, asof_join_table
from raymlops.features.views import FeatureView

START = dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)


def _view(ttl: str | None, timestamp: str | None = "time_hour") -> FeatureView:
    return FeatureView(
        name="obs",
        entities=["origin", "gate"],
        timestamp=timestamp,
        features=["temp", "sky"],
        ttl=ttl,
        source={"ref": "unused.parquet"},
    )


def _source(rng: np.random.Generator, rows: int) -> pa.Table:
    hours = rng.integers(0, 96, rows)
    temp = rng.normal(10, 5, rows)
    return pa.table(
        {
            "origin": pa.array(rng.choice(["EWR", "JFK", "LGA", None], rows, p=[0.3, 0.3, 0.3, 0.1])),
            "gate": pa.array(rng.integers(1, 4, rows)),
            "time_hour": pa.array(
                [START + dt.timedelta(hours=int(h)) for h in hours], pa.timestamp("us", "UTC")
            ),
            "temp": pa.array(np.where(rng.random(rows) < 0.2, np.nan, temp), from_pandas=True),
            "sky": pa.array(rng.choice(["clear", "rain", "snow"], rows)),
        }
    )


def _online(source: pa.Table, view: FeatureView, as_of: dt.datetime, blocks: int) -> dict[tuple, dict]:
    """What materialize_view writes as of ``as_of``: per-block reduction, merge, TTL."""
    upper = to_micros(as_of)
    edges = np.linspace(0, source.num_rows, blocks + 1).astype(int)
    parts = [
        latest_per_entity(source.slice(a, b - a), view, None, upper) for a, b in itertools.pairwise(edges)
    ]
    latest = merge_latest([p for p in parts if p.num_rows], view)
    floor = ttl_floor(view, upper)
    rows = latest.to_pylist()
    return {
        (r["origin"], r["gate"]): {f: r[f] for f in view.features}
        for r in rows
        if floor is None or r[TS] >= floor
    }


@pytest.mark.parametrize(("seed", "ttl", "blocks"), [(0, "3h", 1), (1, "3h", 4), (2, None, 3), (3, "1d", 7)])
def test_store_as_of_t_equals_the_point_in_time_join_at_t(seed: int, ttl: str | None, blocks: int) -> None:
    rng = np.random.default_rng(seed)
    source = _source(rng, 400)
    view = _view(ttl)
    for hours in (5, 40, 95):
        as_of = START + dt.timedelta(hours=hours)
        online = _online(source, view, as_of, blocks)
        keys = [(o, g) for o in ("EWR", "JFK", "LGA") for g in (1, 2, 3)]
        rows = pa.table(
            {
                "origin": [k[0] for k in keys],
                "gate": [k[1] for k in keys],
                "at": pa.array([as_of] * len(keys), pa.timestamp("us", "UTC")),
            }
        )
        offline = asof_join_table(rows, source, JoinSpec.for_view(view, "at")).to_pylist()
        assert online, "every case holds some entity"
        for key, joined in zip(keys, offline, strict=True):
            expected = {f: joined[f] for f in view.features}
            if all(v is None for v in expected.values()):
                assert key not in online or all(v is None for v in online[key].values()), key
                continue
            assert online[key] == expected, (key, as_of)


def test_incremental_bounds_and_static_views() -> None:
    source = _source(np.random.default_rng(5), 200)
    view = _view(None)
    lower = to_micros(START + dt.timedelta(hours=50))
    newer = latest_per_entity(source, view, lower, None)
    assert newer.num_rows and min(newer[TS].to_pylist()) > lower
    static = latest_per_entity(source.drop_columns(["time_hour"]), _view(None, timestamp=None), None, None)
    assert set(static[TS].to_pylist()) == {0}
    # No null entity keys reach the store: they can never be looked up.
    assert None not in static["origin"].to_pylist()
    assert static.num_rows == len(
        {(o, g) for o, g in zip(source["origin"].to_pylist(), source["gate"].to_pylist(), strict=True) if o}
    )
