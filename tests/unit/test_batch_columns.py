"""Batch scoring's columns per task, and the data columns they would overwrite, checked before any work."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raymlops.errors import ConfigError
from raymlops.serving.batch import check_input_schema
from raymlops.serving.batch_scorers import output_columns
from raymlops.tasks import task_from_dict

SCHEMA = pa.schema(
    [
        ("num_a", pa.float64()),
        ("cat", pa.string()),
        ("value", pa.float64()),
        ("probability_gold", pa.float32()),
    ]
)
COLUMNS = {"num_a": "float", "cat": "string"}
MULTICLASS = {"task": "multiclass", "classes": ["bronze", "gold", "silver"]}


def test_each_tasks_columns_and_types() -> None:
    assert output_columns({}) == pa.schema([("probability", pa.float32()), ("label", pa.int8())])  # flights
    assert output_columns({"task": "binary", "positive": "YES", "negative": "NO"}) == pa.schema(
        [("probability", pa.float32()), ("label", pa.string())]
    )
    assert output_columns(MULTICLASS).names == [
        "label",
        "probability_bronze",
        "probability_gold",
        "probability_silver",
    ]
    assert output_columns({"task": "regression", "loss": "mse"}) == pa.schema([("value", pa.float32())])


def test_columns_scoring_would_overwrite_are_refused_per_task() -> None:
    keep = ["num_a", "value"]
    assert check_input_schema(SCHEMA, COLUMNS, keep, "m v1") == keep  # "value" is no binary column
    with pytest.raises(ConfigError, match="already has column\\(s\\) value, which scoring adds"):
        check_input_schema(SCHEMA, COLUMNS, keep, "m v1", {"task": "regression", "loss": "mse"})
    with pytest.raises(ConfigError, match="probability_gold"):
        check_input_schema(SCHEMA, COLUMNS, None, "m v1", MULTICLASS)


def test_multiclass_columns_carry_the_class_values() -> None:
    task = task_from_dict({"task": "multiclass", "classes": [3, 7]})  # integer classes stay integers
    columns = task.output_columns(np.asarray([[0.2, 0.8], [0.6, 0.4]], np.float32))
    assert columns["label"].to_pylist() == [7, 3] and list(columns) == [
        "label",
        "probability_3",
        "probability_7",
    ]
