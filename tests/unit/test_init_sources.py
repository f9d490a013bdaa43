"""The packaged tables of the shipped penguins and diabetes experiments: read from the packages' own
files (no download), with the nulls and values their own loaders give."""

from __future__ import annotations

import numpy as np
import pytest

from raymlops.data.sources import PACKAGED_TABLES, load_source
from raymlops.errors import ConfigError


def test_penguins_keep_their_missing_values_as_nulls() -> None:
    table = load_source("palmerpenguins:penguins")
    assert table.num_rows == 344
    assert sorted(set(table["species"].to_pylist())) == ["Adelie", "Chinstrap", "Gentoo"]
    assert table["sex"].null_count == 11 and "NA" not in table["sex"].to_pylist()  # NA is null, not a sex
    assert table["bill_length_mm"].null_count == 2


def test_diabetes_equals_scikit_learns_own_loader() -> None:
    from sklearn.datasets import load_diabetes

    table = load_source("sklearn:diabetes")
    bunch = load_diabetes(scaled=False)
    assert table.column_names == [*bunch.feature_names, "target"]
    np.testing.assert_array_equal(table.drop_columns(["target"]).to_pandas().to_numpy(), bunch.data)
    np.testing.assert_array_equal(table["target"].to_numpy(), bunch.target)


def test_an_unknown_packaged_table_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown packaged table 'sklearn:iris'") as info:
        load_source("sklearn:iris")
    assert set(PACKAGED_TABLES) <= set(info.value.choices or ())
