"""Row sampling depends on row content only: the same rows whatever the block layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.sampling import keep_mask, sample_rows
from raymlops.errors import ConfigError


def _table(rows: int = 20_000) -> pa.Table:
    rng = np.random.default_rng(1)
    return pa.table({"a": rng.integers(0, 1_000_000, rows), "b": rng.choice(["x", "y", "z"], rows)})


def test_mask_is_the_same_for_any_split_of_the_table() -> None:
    table = _table()
    whole = keep_mask(table, 0.1, seed=7)
    pieces = np.concatenate(
        [keep_mask(table.slice(i, 3000), 0.1, seed=7) for i in range(0, table.num_rows, 3000)]
    )
    np.testing.assert_array_equal(whole, pieces)
    assert 0.08 < whole.mean() < 0.12


def test_seed_changes_the_sample() -> None:
    table = _table()
    assert (keep_mask(table, 0.5, seed=1) != keep_mask(table, 0.5, seed=2)).any()


def test_fraction_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sample_fraction"):
        sample_rows(None, 1.5, seed=0)
