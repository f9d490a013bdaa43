"""The fitted preprocessing and its ONNX graph agree, unknown and null values included."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

from raymlops.data.stats import table_stats
from raymlops.errors import ConfigError, RequestError
from raymlops.features.onnx_graph import preprocessing_graph
from raymlops.features.preprocess import fit_preprocessor
from raymlops.models.export import onnx_feeds


@pytest.fixture
def table() -> pa.Table:
    rng = np.random.default_rng(0)
    rows = 400
    distance = rng.integers(100, 3000, rows).astype(float)
    return pa.table(
        {
            "distance": pa.array(distance, mask=rng.random(rows) < 0.05),  # some nulls
            "hour": rng.integers(5, 23, rows),
            "origin": rng.choice(["EWR", "JFK", "LGA"], rows),
            "dest": rng.choice(
                ["ATL", "ORD", "LAX", "SFO", "BOS", "RARE"], rows, p=[0.3, 0.3, 0.2, 0.1, 0.097, 0.003]
            ),
        }
    )


def test_onnx_graph_matches_python_transform(table: pa.Table) -> None:
    pre = fit_preprocessor(
        table_stats(table), ["distance", "hour"], ["origin", "dest"], max_categories=4, min_frequency=5
    )
    assert pre.categories[1] == ("ATL", "LAX", "ORD", "SFO")  # top 4, RARE and BOS dropped
    serving = table.set_column(3, "dest", pa.array(["NEVER-SEEN", *table["dest"].to_pylist()[1:]]))
    python = pre.transform(serving)
    session = ort.InferenceSession(
        preprocessing_graph(pre, opset=17).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    onnx = session.run(None, onnx_feeds(serving, pre.input_columns))[0]
    assert onnx.shape == (table.num_rows, pre.num_features) == python.shape
    np.testing.assert_allclose(onnx, python, atol=1e-6)
    assert python[0, 2 + 3 :].sum() == 0  # unknown dest -> all zeros
    # Nulls are imputed with the train mean, i.e. standardised to 0.
    nulls = np.flatnonzero(~table["distance"].is_valid().to_numpy(zero_copy_only=False))
    assert len(nulls) and np.allclose(python[nulls, 0], 0.0)


def test_standardised_train_columns_have_zero_mean_unit_std(table: pa.Table) -> None:
    pre = fit_preprocessor(table_stats(table), ["hour"], [], max_categories=4, min_frequency=1)
    x = pre.transform(table)
    assert abs(x[:, 0].mean()) < 1e-5 and abs(x[:, 0].std(ddof=1) - 1) < 1e-3


def test_unknown_feature_column_is_a_config_error(table: pa.Table) -> None:
    with pytest.raises(ConfigError, match="delay"):
        fit_preprocessor(table_stats(table), ["delay"], [], max_categories=4, min_frequency=1)


def test_missing_column_at_transform_is_named(table: pa.Table) -> None:
    pre = fit_preprocessor(table_stats(table), ["hour"], ["origin"], max_categories=4, min_frequency=1)
    with pytest.raises(RequestError, match="origin"):
        pre.transform(table.drop_columns(["origin"]))
