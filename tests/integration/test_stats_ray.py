"""Validation statistics on a Ray Dataset of several blocks: allowed counted per block, key uniqueness in
Ray tasks per hash bucket, the driver receiving bounded partials; the same answers as one process."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.audit import audit_dataset
from raymlops.data.key_check import bucket_bounds, distributed_duplicates
from raymlops.data.stats import _block_stats, compute_dataset_stats, key_hashes

pytestmark = pytest.mark.usefixtures("ray_local")

ROWS, BLOCKS = 40_000, 4


def _blocks() -> list[pa.Table]:
    """4 blocks; keys (user, n) repeat within and across blocks; carriers "ZZ", "QQ" are not allowed."""
    rng = np.random.default_rng(3)
    user = [f"u{i:05d}" for i in range(ROWS)]
    n = np.arange(ROWS) % 3
    for a, b in ((5, 6), (10, 39_990), (20_000, 20_001), (15_000, 35_000), (1, 29_999)):
        user[b], n[b] = user[a], n[a]  # 5 duplicates, 3 of them in another block
    carrier = rng.choice(["AA", "UA", "DL"], ROWS).astype(object)
    carrier[[3, 9_000, 12_345, 31_000]] = ["ZZ", "QQ", "ZZ", None]
    table = pa.table({"user": user, "n": n, "carrier": pa.array(carrier, pa.string())})
    size = ROWS // BLOCKS
    return [table.slice(i * size, size) for i in range(BLOCKS)]


def test_allowed_and_key_uniqueness_on_blocks_match_one_process_and_stay_off_the_driver(
    tmp_path: Path,
) -> None:
    import ray.data

    blocks = _blocks()
    table = pa.concat_tables(blocks)
    ds = ray.data.from_arrow(blocks).materialize()
    assert ds.num_blocks() == BLOCKS
    options = {"allowed": {"carrier": ["AA", "UA", "DL"]}, "max_exact_distinct": 1_000}
    key = ["user", "n"]
    distributed = compute_dataset_stats(ds, None, key, **options)
    local = compute_dataset_stats(table, None, key, **options)

    assert distributed.duplicate_keys == local.duplicate_keys == 5
    assert (distributed.key_buckets, local.key_buckets) == (1, None)
    for stats in (distributed, local):
        carrier = stats.columns["carrier"]
        assert carrier.exact and (carrier.unexpected, carrier.unexpected_values) == (3, ["QQ", "ZZ"])
        assert not stats.columns["user"].exact  # 40k distinct ids > 1,000: sketches
    # The driver got statistics with bounded sketches, not 40k ids (~0.5 MB as JSON) nor 8 bytes per key.
    assert distributed.driver_bytes < 4 * ROWS < local.driver_bytes

    # The validate stage's audit passes the rules' allowed sets and bound to the same pass.
    rules = {
        "unique": {"key": key},
        "max_exact_distinct": 1_000,
        "columns": {"carrier": {"type": "string", "max_null_fraction": 0.5, "allowed": ["AA", "UA", "DL"]}},
    }
    report = audit_dataset(ds, rules, "v1", tmp_path).report
    (allowed,) = [c for c in report["columns"]["carrier"]["checks"] if c["rule"] == "allowed"]
    assert (allowed["unexpected_rows"], allowed["observed"]) == (3, ["QQ", "ZZ"])
    assert (report["duplicate_keys"], report["key_buckets"]) == (5, 1)
    assert "table: unique['user', 'n']: observed '5 duplicate rows', expected '0'" in report["failures"]

    # More buckets (one per 7,000 keys): duplicates still meet in their bucket, whatever their block.
    partials = ds.map_batches(
        partial(_block_stats, columns=[], key=key), batch_format="pyarrow", batch_size=None
    ).materialize()
    keys = sum(len(key_hashes(block, key)) for block in blocks)
    assert distributed_duplicates(partials, keys, keys_per_bucket=7_000) == (ROWS - 5, 6)
    bounds = [bucket_bounds(b, 6) for b in range(6)]
    assert bounds[0][0] == 0 and bounds[-1][1] == 2**64
    assert all(high == low for (_, high), (low, _) in itertools.pairwise(bounds))
