"""Point-in-time join kernel and windowed aggregations: no value from the future or beyond the TTL.

Property-based (hypothesis) on the pure pyarrow/numpy kernels against brute-force references; the
Ray paths run the same kernels and are checked in tests/integration/test_pit_join_ray.py.
"""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raymlops.errors import ConfigError
from raymlops.features.partitions import partition_ids
from raymlops.features.pit_join import JoinSpec, asof_join_table
from raymlops.features.views import Aggregation, FeatureView, ViewSource, Window, aggregate_on_grid

EPOCH = dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)
KEYS = st.sampled_from(["a", "b", "c", None])
SECONDS = st.one_of(st.none(), st.integers(0, 30))  # small range: many ties and exact TTL edges


def _ts(seconds: list[int | None], unit: str = "s") -> pa.Array:
    return pa.array(
        [None if s is None else EPOCH + timedelta(seconds=s) for s in seconds], pa.timestamp(unit, "UTC")
    )


@st.composite
def timelines(draw):
    """Rows (k1, k2, t) and feature rows (k1, k2, t, value) with duplicates, nulls and ties."""
    two_keys = draw(st.booleans())
    n_rows, n_feats = draw(st.integers(0, 25)), draw(st.integers(0, 25))
    rows = {
        "k1": [draw(KEYS) for _ in range(n_rows)],
        "k2": [draw(st.sampled_from(["x", "y"])) for _ in range(n_rows)],
        "t": [draw(SECONDS) for _ in range(n_rows)],
    }
    feats = {
        "k1": [draw(KEYS) for _ in range(n_feats)],
        "k2": [draw(st.sampled_from(["x", "y"])) for _ in range(n_feats)],
        "ft": [draw(SECONDS) for _ in range(n_feats)],
    }
    feats["value"] = list(range(n_feats))  # unique: identifies the feature row a match came from
    ttl = draw(st.one_of(st.none(), st.integers(0, 10)))
    return rows, feats, ("k1", "k2") if two_keys else ("k1",), ttl


def _tables(rows: dict, feats: dict) -> tuple[pa.Table, pa.Table]:
    left = pa.table(
        {
            "k1": pa.array(rows["k1"], pa.string()),
            "k2": pa.array(rows["k2"], pa.string()),
            "t": _ts(rows["t"]),
        }
    )
    right = pa.table(
        {
            "k1": pa.array(feats["k1"], pa.string()),
            "k2": pa.array(feats["k2"], pa.string()),
            "ft": _ts(feats["ft"]),
            "value": pa.array(feats["value"], pa.int64()),
            "ft_copy": _ts(feats["ft"]),  # joined like a feature, to check each match's own time
        }
    )
    return left, right


def brute_force(rows: dict, feats: dict, keys: tuple[str, ...], ttl: int | None) -> list[int | None]:
    """Per row: the latest feature row with equal non-null keys and time <= the row's, within the TTL."""
    out = []
    for i in range(len(rows["t"])):
        t = rows["t"][i]
        best = None
        for j in range(len(feats["ft"])):
            ft = feats["ft"][j]
            if t is None or ft is None or any(rows[k][i] is None or rows[k][i] != feats[k][j] for k in keys):
                continue
            if ft <= t and (best is None or ft >= feats["ft"][best]):  # >=: the later row wins ties
                best = j
        if best is not None and ttl is not None and t - feats["ft"][best] > ttl:
            best = None
        out.append(None if best is None else feats["value"][best])
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timelines())
def test_asof_join_equals_brute_force_and_never_leaks(case) -> None:
    rows, feats, keys, ttl = case
    left, right = _tables(rows, feats)
    spec = JoinSpec(keys, "t", "ft", ("value", "ft_copy"), None if ttl is None else timedelta(seconds=ttl))
    joined = asof_join_table(left, right, spec)
    assert joined.num_rows == left.num_rows
    assert joined.select(["k1", "k2", "t"]).equals(left)  # rows unchanged, in order
    assert joined["value"].to_pylist() == brute_force(rows, feats, keys, ttl)
    for row in joined.to_pylist():
        if row["value"] is not None:
            assert row["ft_copy"] <= row["t"]  # nothing from after the row's event time
            if ttl is not None:
                assert row["t"] - row["ft_copy"] <= timedelta(seconds=ttl)  # nothing older than the TTL


@settings(max_examples=100, deadline=None)
@given(timelines())
def test_static_join_takes_the_last_row_per_key(case) -> None:
    rows, feats, keys, _ = case
    left, right = _tables(rows, feats)
    joined = asof_join_table(
        left, right.drop_columns(["ft", "ft_copy"]), JoinSpec(keys, "t", None, ("value",))
    )
    expected = []
    for i in range(left.num_rows):
        matches = [
            feats["value"][j]
            for j in range(len(feats["value"]))
            if all(rows[k][i] is not None and rows[k][i] == feats[k][j] for k in keys)
        ]
        expected.append(matches[-1] if matches else None)
    assert joined["value"].to_pylist() == expected


def test_a_finer_feature_time_is_not_floored_into_the_past() -> None:
    # A feature stamped 10.5 s must not reach a row at 10 s even though the row's unit is seconds.
    left = pa.table({"k": ["a", "a"], "t": _ts([10, 11])})
    stamp = pa.array([EPOCH + timedelta(seconds=10.5)], pa.timestamp("ms", "UTC"))
    right = pa.table({"k": ["a"], "ft": stamp, "v": [1.0]})
    joined = asof_join_table(left, right, JoinSpec(("k",), "t", "ft", ("v",), timedelta(seconds=5)))
    assert joined["v"].to_pylist() == [None, 1.0]


def test_a_feature_name_already_in_the_rows_is_refused() -> None:
    left = pa.table({"k": ["a"], "t": _ts([1]), "v": [0.0]})
    right = pa.table({"k": ["a"], "ft": _ts([0]), "v": [1.0]})
    with pytest.raises(ConfigError, match="already exist"):
        asof_join_table(left, right, JoinSpec(("k",), "t", "ft", ("v",)))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", None]), st.sampled_from([1, 2]))),
    st.integers(1, 7),
)
def test_equal_keys_land_in_the_same_partition_in_any_table(keys, num_partitions) -> None:
    one = pa.table({"k": pa.array([k for k, _ in keys], pa.string()), "n": [n for _, n in keys]})
    other = one.take(np.arange(one.num_rows)[::-1].copy()) if one.num_rows else one  # another block
    a = partition_ids(one, ("k", "n"), num_partitions)
    b = partition_ids(other, ("k", "n"), num_partitions)[::-1]
    assert a.tolist() == b.tolist()
    assert ((a >= 0) & (a < num_partitions)).all()


# ---------------------------------------------------------------- windowed aggregations


def _history_view(size_s: int, every_s: int, lag_s: int) -> FeatureView:
    return FeatureView(
        name="hist",
        entities=["k"],
        timestamp="t",
        features=["share", "n", "total", "avg"],
        ttl="1d",
        source=ViewSource(ref="unused.parquet"),
        window=Window(size=f"{size_s}s", every=f"{every_s}s", lag=f"{lag_s}s"),
        aggregations=[
            Aggregation(name="share", column="v", function="share_above", threshold=2.0),
            Aggregation(name="n", column="v", function="count"),
            Aggregation(name="total", column="v", function="sum"),
            Aggregation(name="avg", column="v", function="mean"),
        ],
    )


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 40), st.one_of(st.none(), st.integers(0, 5))),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 10),
    st.integers(1, 6),
    st.integers(0, 8),
)
def test_window_aggregates_only_events_known_before_each_grid_time(events, size_s, every_s, lag_s) -> None:
    view = _history_view(size_s, every_s, lag_s)
    table = pa.table(
        {
            "k": [k for k, _, _ in events],
            "t": _ts([t for _, t, _ in events]),
            "v": pa.array([v for _, _, v in events], pa.int64()),
        }
    )
    out = aggregate_on_grid(table, view)
    assert out.column_names == ["k", "t", "share", "n", "total", "avg"]
    seen = set()
    for row in out.to_pylist():
        g = int((row["t"] - EPOCH).total_seconds())
        seen.add((row["k"], g))
        # Brute force: events of this key whose value is known (t + lag) in (g - size, g].
        window = [v for k, t, v in events if k == row["k"] and g - size_s < t + lag_s <= g and v is not None]
        assert row["n"] == len(window)
        assert row["total"] == pytest.approx(sum(window))
        if window:
            assert row["share"] == pytest.approx(sum(v > 2 for v in window) / len(window))
            assert row["avg"] == pytest.approx(sum(window) / len(window))
        else:
            assert row["share"] is None and row["avg"] is None
        assert g % every_s == 0  # on the grid
    # Each key's last row is the first grid time at which its last event has left: a count of 0.
    last = {}
    for row in out.to_pylist():
        last[row["k"]] = row
    assert all(row["n"] == 0 for row in last.values())
    # Every grid point at which some event of a key is inside the window has a row.
    for k, t, _ in events:
        known = t + lag_s + (-(t + lag_s) % every_s)  # first grid point at/after it is known
        if known - size_s < t + lag_s:
            assert (k, known) in seen
