"""Bounded value counts: exact up to max_exact_distinct, then frequent-items + HLL sketches, all readers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.profile import OTHER, Profile
from raymlops.data.stats import ColumnStats, DatasetStats, _tree_merge, table_stats
from raymlops.data.validation import check_rules, stats_options
from raymlops.data.value_counts import LG_MAX_K
from raymlops.errors import ConfigError
from raymlops.features.preprocess import fit_preprocessor

DISTINCT = 50_000
HOT, WARM = 5_000, 2_000  # rows of the two heavy hitters


def _table() -> pa.Table:
    """50k ids seen once, "hot" 5,000 times and "warm" 2,000 times, shuffled; a null every 1,000 rows."""
    values = [f"id-{i:06d}" for i in range(DISTINCT)] + ["hot"] * HOT + ["warm"] * WARM
    order = np.random.default_rng(7).permutation(len(values))
    shuffled = [None if i % 1_000 == 0 else values[j] for i, j in enumerate(order)]
    return pa.table({"user": pa.array(shuffled, pa.string())})


def test_a_column_past_max_exact_distinct_keeps_bounded_sketches_every_reader_serves() -> None:
    table = _table()
    rows, non_null = table.num_rows, table.num_rows - table["user"].null_count
    values, counts = np.unique(table["user"].drop_null().to_numpy(zero_copy_only=False), return_counts=True)
    truth = dict(zip(values, counts, strict=True))
    epsilon = 3.5 / 2**LG_MAX_K * non_null  # the frequent-items sketch's a-priori error bound

    exact = table_stats(table, max_exact_distinct=100_000)["user"]
    assert exact.exact and exact.distinct == len(truth) and exact.counts["hot"] == truth["hot"]
    sketched = table_stats(table, max_exact_distinct=1_000)["user"]
    assert not sketched.exact and sketched.counts == {}
    assert len(sketched.items or b"") + len(sketched.hll or b"") < 64 * 1024  # bounded, not ~1 MB
    assert abs(sketched.distinct - len(truth)) < 0.05 * len(truth)
    assert sketched.summary()["distinct_estimated"] is True and "distinct_estimated" not in exact.summary()
    (hot, hot_rows), (warm, warm_rows) = sketched.top(2)
    assert (hot, warm) == ("hot", "warm")
    assert abs(hot_rows - truth["hot"]) <= epsilon and abs(warm_rows - truth["warm"]) <= epsilon
    assert set(sketched.frequent(1_000)) == {"hot", "warm"} == set(exact.frequent(1_000))

    # Merges: exact parts crossing the bound become a sketch; exact + sketch; the same answers.
    small = [table_stats(table.slice(i, 800), max_exact_distinct=1_000)["user"] for i in (0, 800)]
    assert all(part.exact for part in small)
    assert not small[0].merge(small[1]).exact  # 1,600 distinct values > 1,000
    parts = [table_stats(table.slice(0, 500), max_exact_distinct=1_000)["user"]]
    parts.append(table_stats(table.slice(500), max_exact_distinct=1_000)["user"])
    assert parts[0].exact and not parts[1].exact
    merged = _tree_merge(parts)
    assert (merged.rows, merged.nulls) == (rows, table["user"].null_count)
    assert abs(merged.distinct - len(truth)) < 0.05 * len(truth)
    assert [value for value, _ in merged.top(2)] == ["hot", "warm"]
    assert abs(merged.top(1)[0][1] - truth["hot"]) <= epsilon
    assert ColumnStats.from_json(merged.to_json()) == merged  # the sketches survive the JSON a block sends

    # The profile (drift's top categories), the preprocessor's vocabulary, validation's distinct.
    profile = Profile.from_stats({"user": merged}, rows, "v1").columns["user"]
    assert profile.distinct_estimated is True and profile.count == non_null
    assert abs(profile.frequencies["hot"] - truth["hot"] / non_null) <= epsilon / non_null
    assert set(profile.frequencies) == {"hot", "warm", OTHER}  # only surely-frequent values, not id noise
    assert abs(sum(profile.frequencies.values()) - 1.0) < 1e-3
    exact_profile = Profile.from_stats({"user": exact}, rows, "v1").columns["user"]
    assert exact_profile.distinct == len(truth) and exact_profile.distinct_estimated is None
    pre = fit_preprocessor({"user": merged}, [], ["user"], max_categories=10, min_frequency=1_000)
    assert pre.categories == (("hot", "warm"),)


def test_allowed_counts_every_unexpected_row_in_either_form() -> None:
    table = _table()
    rules = {"columns": {"user": {"type": "string", "max_null_fraction": 0.01, "allowed": ["hot", "warm"]}}}
    options = stats_options({**rules, "max_exact_distinct": 1_000})
    assert options == {"allowed": {"user": ["hot", "warm"]}, "max_exact_distinct": 1_000}
    halves = [table_stats(table.slice(s, 30_000), **options)["user"] for s in (0, 30_000)]
    merged = halves[0].merge(halves[1])
    assert not merged.exact
    report = check_rules(DatasetStats({"user": merged}, table.num_rows), rules)
    (check,) = [c for c in report["columns"]["user"]["checks"] if c["rule"] == "allowed"]
    values = table["user"].drop_null().to_pylist()
    unexpected = sum(1 for v in values if v not in ("hot", "warm"))
    assert (check["passed"], check["unexpected_rows"]) == (False, unexpected)
    assert check["observed"] == sorted(set(values) - {"hot", "warm"})[:10]  # the smallest 10, as before
    # Without the per-block count, exact counts still give it; a sketch alone cannot, and says so.
    exact = table_stats(table, max_exact_distinct=100_000)["user"]
    assert exact.unexpected_rows(["hot", "warm"])[0] == unexpected
    assert table_stats(table, max_exact_distinct=1_000)["user"].unexpected_rows(["hot"])[0] is None
    with pytest.raises(ConfigError, match=r"validate\.max_exact_distinct"):
        stats_options({"max_exact_distinct": -1})
