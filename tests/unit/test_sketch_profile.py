"""The quantile sketch keeps its stated rank error through merges; profiles round-trip through JSON."""

from __future__ import annotations

import json
from functools import reduce
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.profile import QUANTILE_LEVELS, Profile
from raymlops.data.sketch import EPSILON, QuantileSketch
from raymlops.data.stats import table_stats


def _blocks(values: np.ndarray, n: int) -> list[QuantileSketch]:
    return [QuantileSketch.of(pa.array(part)) for part in np.array_split(values, n)]


def _pairwise(sketches: list[QuantileSketch]) -> QuantileSketch:
    while len(sketches) > 1:
        paired = [a.merge(b) for a, b in zip(sketches[0::2], sketches[1::2], strict=False)]
        sketches = paired + sketches[-1:] if len(sketches) % 2 else paired
    return sketches[0]


def _rank_errors(sketch: QuantileSketch, data: np.ndarray) -> tuple[float, float]:
    """Largest CDF error over the data's own values, and largest rank error of the sketch's quantiles."""
    ordered = np.sort(data)
    xs = np.unique(ordered)
    cdf_error = np.abs(sketch.cdf(xs) - np.searchsorted(ordered, xs, side="right") / len(data)).max()
    qs = np.linspace(0, 1, 1001)
    found = sketch.quantiles(qs)
    below = np.searchsorted(ordered, found, side="left") / len(data)  # P(X < x)
    at_most = np.searchsorted(ordered, found, side="right") / len(data)  # P(X <= x)
    # x is a q-quantile within rank error e if P(X < x) - e <= q <= P(X <= x) + e
    quantile_error = np.maximum(below - qs, qs - at_most).clip(min=0).max()
    return float(cdf_error), float(quantile_error)


def test_quantiles_of_merged_blocks_stay_within_the_stated_rank_error() -> None:
    data = np.random.default_rng(7).normal(10.0, 3.0, 200_000)
    blocks = _blocks(data, 8)
    assert not any(b.exact for b in blocks)
    tree, fold = _pairwise(blocks), reduce(QuantileSketch.merge, blocks)
    assert tree.count == fold.count == len(data)
    assert (tree.min, tree.max) == (data.min(), data.max())
    # bound: (1 + summary merges on the deepest path) * EPSILON; 3 levels pairwise, 7 for a left fold
    for sketch, depth in ((tree, 3), (fold, 7)):
        cdf_error, quantile_error = _rank_errors(sketch, data)
        assert cdf_error <= (1 + depth) * EPSILON and quantile_error <= (1 + depth) * EPSILON
        assert cdf_error <= EPSILON  # and on smooth data the merges add almost nothing (measured ~0.5 eps)
    np.testing.assert_allclose(tree.quantiles([0.5]), np.median(data), atol=0.02)


def test_a_discrete_column_is_exact_until_it_has_too_many_values() -> None:
    hours = np.random.default_rng(3).integers(5, 24, 100_000)
    sketch = reduce(QuantileSketch.merge, _blocks(hours, 8))
    assert sketch.exact and sketch.count == len(hours)
    np.testing.assert_array_equal(
        sketch.quantiles(QUANTILE_LEVELS), np.quantile(hours, QUANTILE_LEVELS, method="inverted_cdf")
    )
    xs = np.arange(3, 26)
    np.testing.assert_allclose(sketch.cdf(xs), [np.mean(hours <= x) for x in xs], atol=1e-12)
    np.testing.assert_allclose(sketch.cdf(xs, left=True), [np.mean(hours < x) for x in xs], atol=1e-12)
    # two exact halves with 300 distinct values together: a KLL sketch within its rank error
    wide = np.random.default_rng(4).integers(0, 300, 50_000)
    low, high = (
        QuantileSketch.of(pa.array(wide[wide < 150])),
        QuantileSketch.of(pa.array(wide[wide >= 150])),
    )
    merged = low.merge(high)
    assert low.exact and high.exact and not merged.exact and merged.kll is not None
    assert (merged.count, merged.min, merged.max) == (len(wide), 0, 299)
    assert max(_rank_errors(merged, wide)) <= EPSILON


def test_merge_order_does_not_matter() -> None:
    data = np.random.default_rng(11).lognormal(3.0, 1.0, 120_000)
    blocks = _blocks(data, 6)
    orders = [reduce(QuantileSketch.merge, blocks), reduce(QuantileSketch.merge, blocks[::-1])]
    orders.append(_pairwise([blocks[i] for i in (3, 0, 5, 1, 4, 2)]))
    grid = np.quantile(data, np.linspace(0, 1, 501))
    for other in orders[1:]:
        assert np.abs(orders[0].cdf(grid) - other.cdf(grid)).max() <= 2 * EPSILON
    discrete = _blocks(np.random.default_rng(2).integers(0, 40, 30_000), 5)
    exact = [reduce(QuantileSketch.merge, discrete), reduce(QuantileSketch.merge, discrete[::-1])]
    assert exact[0].to_dict() == exact[1].to_dict()


def test_nulls_nans_and_timestamps() -> None:
    sketch = QuantileSketch.of(pa.chunked_array([[1.0, None, np.nan], [3.0, 2.0]]))
    assert sketch.count == 3 and sketch.quantiles([0.5]).tolist() == [2.0]
    stamps = pa.array([0, 3_600, 7_000], pa.timestamp("ms", tz="UTC"))  # as whole seconds, truncated
    assert QuantileSketch.of(stamps).quantiles([0, 0.5, 1]).tolist() == [0.0, 3.0, 7.0]
    empty = QuantileSketch.of(pa.array([None, None], pa.int64()))
    assert empty.count == 0 and np.isnan(empty.quantiles([0.5])).all()
    assert empty.merge(sketch) is sketch


@pytest.mark.parametrize("values", [np.arange(10.0), np.random.default_rng(0).normal(size=5_000)])
def test_sketch_json_round_trip(values: np.ndarray) -> None:
    sketch = QuantileSketch.of(pa.array(values))
    again = QuantileSketch.from_dict(json.loads(json.dumps(sketch.to_dict())))
    assert again.to_dict() == sketch.to_dict() and again.exact == sketch.exact
    np.testing.assert_array_equal(again.quantiles(QUANTILE_LEVELS), sketch.quantiles(QUANTILE_LEVELS))


def test_profile_round_trips_through_save_and_load(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    n = 20_000
    table = pa.table(
        {
            "delay": pa.array(rng.gamma(2.0, 15.0, n), mask=rng.random(n) < 0.03),
            "hour": rng.integers(5, 24, n),
            "carrier": rng.choice([f"C{i}" for i in range(80)], n),
            "when": pa.array(rng.integers(1_356_998_400, 1_388_534_400, n) * 1000, pa.timestamp("ms")),
        }
    )
    profile = Profile.from_stats(table_stats(table), table.num_rows, "flights@3")
    path = profile.save(tmp_path / "profile.json")
    assert Profile.load(path) == profile
    assert path.stat().st_size < 5 * 1024  # small: about 1 KB a column
    delay, hour, carrier = profile.columns["delay"], profile.columns["hour"], profile.columns["carrier"]
    assert len(delay.quantiles or []) == 101 and not delay.discrete
    assert delay.bin_edges and len(delay.bin_fractions or []) == len(delay.bin_edges) + 1
    assert hour.discrete and hour.bin_edges == list(range(5, 24))
    assert carrier.distinct == 80 and len(carrier.frequencies or {}) == 51
    assert abs(sum((carrier.frequencies or {}).values()) - 1) < 1e-4
    assert profile.columns["when"].kind == "timestamp"
