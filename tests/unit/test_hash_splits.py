"""Split kernels, one block at a time, as Ray Data runs them: properties checked with hypothesis."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raymlops.data.hash_splits import (
    check_fractions,
    group_assign,
    random_assign,
    strata_cuts,
    strata_histogram,
    stratified_assign,
)
from raymlops.data.splits import _between
from raymlops.errors import ConfigError

FRACTIONS = (0.8, 0.1, 0.1)


def _table(rows: int, classes: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    # Skewed class shares (a rare class too) and string class values, as a user's label may be.
    weights = rng.dirichlet(np.ones(classes) * 0.7) * 0.9 + 0.1 / classes
    return pa.table(
        {
            "x": rng.normal(size=rows),
            "k": rng.integers(0, 50, rows),
            "group": pa.array([f"g{v}" for v in rng.integers(0, max(rows // 20, 2), rows)]),
            "label": pa.array([f"c{v}" for v in rng.choice(classes, size=rows, p=weights / weights.sum())]),
        }
    )


def _blocks(table: pa.Table, cuts: list[int]) -> list[pa.Table]:
    """The table split into blocks at ``cuts`` (any layout Ray Data might read it in)."""
    edges = [0, *sorted({c % max(table.num_rows, 1) for c in cuts}), table.num_rows]
    return [table.slice(lo, hi - lo) for lo, hi in itertools.pairwise(edges) if hi > lo]


def _stratified(blocks: list[pa.Table], seed: int) -> np.ndarray:
    histograms: dict[str, np.ndarray] = {}
    for block in blocks:
        part = strata_histogram(block, "label", seed)
        for value, bucket, rows in zip(
            *(part[c].to_pylist() for c in ("class", "bucket", "rows")), strict=True
        ):
            histograms.setdefault(value, np.zeros(4096, np.int64))[bucket] += rows
    cuts = strata_cuts(histograms, FRACTIONS)
    return np.concatenate([stratified_assign(b, "label", seed, cuts) for b in blocks])


layouts = st.lists(st.integers(0, 10_000), max_size=6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), first=layouts, second=layouts)
def test_same_rows_same_split_in_any_layout(seed: int, first: list[int], second: list[int]) -> None:
    table = _table(3000, 4, seed=1)
    for assign in (
        lambda b: random_assign(b, FRACTIONS, seed),
        lambda b: group_assign(b, "group", FRACTIONS, seed),
    ):
        a = np.concatenate([assign(b) for b in _blocks(table, first)])
        b = np.concatenate([assign(b) for b in _blocks(table, second)])
        assert (a == b).all()
    assert (_stratified(_blocks(table, first), seed) == _stratified(_blocks(table, second), seed)).all()


def test_another_seed_moves_rows() -> None:
    table = _table(2000, 3, seed=2)
    assert (random_assign(table, FRACTIONS, 1) != random_assign(table, FRACTIONS, 2)).any()


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31))
def test_groups_never_straddle(seed: int) -> None:
    table = _table(4000, 2, seed=seed % 1000)
    splits = group_assign(table, "group", FRACTIONS, seed)
    seen: dict[str, set[int]] = {}
    for group, split in zip(table["group"].to_pylist(), splits.tolist(), strict=True):
        seen.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in seen.values())
    assert set(splits.tolist()) == {0, 1, 2}  # 200 groups: every split gets some


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), classes=st.integers(2, 12), rows=st.integers(5_000, 20_000))
def test_stratified_class_shares_within_one_point(seed: int, classes: int, rows: int) -> None:
    table = _table(rows, classes, seed=seed % 997)
    splits = _stratified(_blocks(table, [rows // 3, rows // 2]), seed)
    labels = np.array(table["label"].to_pylist())
    overall = {c: float(np.mean(labels == c)) for c in set(labels)}
    for index, fraction in enumerate(FRACTIONS):
        chosen = labels[splits == index]
        assert abs(len(chosen) / rows - fraction) < 0.01
        for value, share in overall.items():
            assert abs(float(np.mean(chosen == value)) - share) <= 0.01, (index, value)


def test_random_split_shares_follow_the_fractions() -> None:
    splits = random_assign(_table(20_000, 2, seed=3), (0.6, 0.3, 0.1), seed=0)
    shares = np.bincount(splits, minlength=3) / splits.size
    assert np.allclose(shares, (0.6, 0.3, 0.1), atol=0.015)


@settings(max_examples=30, deadline=None)
@given(
    minutes=st.lists(st.integers(0, 60 * 24 * 60), min_size=1, max_size=200),
    valid_day=st.integers(1, 30),
    test_gap=st.integers(1, 29),
)
def test_time_split_boundaries(minutes: list[int], valid_day: int, test_gap: int) -> None:
    start = dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc)
    times = pa.array([start + dt.timedelta(minutes=m) for m in minutes], pa.timestamp("us", tz="UTC"))
    table = pa.table({"t": times, "i": list(range(len(minutes)))})
    valid_start = start + dt.timedelta(days=valid_day)
    test_start = valid_start + dt.timedelta(days=test_gap)
    parts = [
        _between(table, "t", None, valid_start),
        _between(table, "t", valid_start, test_start),
        _between(table, "t", test_start, None),
    ]
    assert sorted(i for p in parts for i in p["i"].to_pylist()) == list(range(len(minutes)))
    assert all(t < valid_start for t in parts[0]["t"].to_pylist())
    assert all(valid_start <= t < test_start for t in parts[1]["t"].to_pylist())
    assert all(t >= test_start for t in parts[2]["t"].to_pylist())


@pytest.mark.parametrize(
    ("fractions", "problem"),
    [((0.8, 0.2), "must have 3 values"), ((0.8, 0.3, 0.1), "sums to 1.2"), ((1.0, 0.0, 0.0), "must be > 0")],
)
def test_bad_fractions_name_the_key_and_the_fix(fractions: tuple[float, ...], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        check_fractions(fractions)
    assert "features.split.fractions" in str(info.value)
