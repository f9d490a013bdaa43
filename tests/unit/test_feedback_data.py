"""Feedback as training data, the pure parts: the label from an outcome and back (every task), the cap on
feedback rows and its seeded sample, the validate rules narrowed to a feedback table's columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raymlops.errors import ConfigError
from raymlops.monitoring.feedback_data import cap_feedback_rows, feedback_rules, max_feedback_rows
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask


@pytest.mark.parametrize(
    ("task", "outcomes"),
    [
        (BinaryTask(positive="YES", negative="NO"), ["YES", "NO", True, 0]),
        (BinaryTask(threshold=15.0), [1, 0, True, False]),  # arr_delay > 15: outcomes are 0 / 1
        (MulticlassTask(classes=("bronze", "gold", "silver")), ["gold", "silver", "bronze"]),
        (RegressionTask(), [212.5, 180.0, -3.0]),
    ],
)
def test_label_values_give_back_the_outcomes_targets(task, outcomes) -> None:
    targets = task.outcome_targets(outcomes)
    labels = task.label_values(targets)
    assert np.array_equal(task.target(labels).to_numpy().astype(np.float64), targets)


def test_a_binary_label_with_one_known_value_cannot_be_written_back() -> None:
    with pytest.raises(ValueError, match="other value"):
        BinaryTask(positive="YES").label_values(np.array([1.0]))


def test_the_cap_keeps_feedback_at_most_its_share_and_samples_the_same_rows_in_any_order() -> None:
    assert max_feedback_rows(600, 0.25) == 200  # 200 / (600 + 200) = 25%
    assert max_feedback_rows(600, 0.5) == 600 and max_feedback_rows(10, 1.0) is None
    for share in (0.0, 1.5):
        with pytest.raises(ConfigError, match="max_feedback_share"):
            max_feedback_rows(10, share)
    n = 500
    table = pa.table({"prediction_id": [f"p{i // 5}" for i in range(n)], "row": [i % 5 for i in range(n)]})
    kept = cap_feedback_rows(table, 200, seed=42)
    assert kept.num_rows == 200 and cap_feedback_rows(table, 600, seed=42) is table
    shuffled = table.take(pa.array(np.random.default_rng(0).permutation(n)))
    key = lambda t: sorted(zip(t["prediction_id"].to_pylist(), t["row"].to_pylist(), strict=True))  # noqa: E731
    assert key(cap_feedback_rows(shuffled, 200, seed=42)) == key(kept)
    assert key(cap_feedback_rows(table, 200, seed=7)) != key(kept)


def test_rules_are_narrowed_to_the_feedback_tables_columns_without_pii() -> None:
    from raymlops.config import compose

    cfg = compose(["+data.columns={dest: {pii: true}}"])
    rules = feedback_rules(cfg, ["hour", "distance", "dest", "arr_delay", "carrier"])
    assert set(rules["columns"]) == {"hour", "distance", "arr_delay", "carrier"}  # dest: a hash
    assert rules["unique"]["key"] == [] and rules["drift"]["reference"] is None  # no flight column
    assert rules["min_rows"] == cfg.validate.min_rows
