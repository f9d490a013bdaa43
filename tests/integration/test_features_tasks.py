"""The features stage for every task and split kind on generated tables, and every config mistake of the
label and split named before a model trains (issue 16, point 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from raymlops.errors import ConfigError
from tests.task_tables import CLASSES, binary_yes_no, multiclass_strings, regression_numbers, table_overrides


def _run(tmp_path: Path, table: pa.Table, *overrides: str):
    from raymlops.config import compose
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.state import PipelineState
    from raymlops.stages.features import FeaturesStage
    from raymlops.stages.ingest import IngestStage

    path = tmp_path / "table.parquet"
    pq.write_table(table, path)
    cfg = compose(
        [
            f"state_dir={tmp_path}",
            *table_overrides(path),
            "explain.background_rows=10",
            *overrides,
        ]
    )
    ctx = RunContext(cfg)
    state = FeaturesStage().run(ctx, IngestStage().run(ctx, PipelineState()))
    return ctx, state.require("features")


def _labels(out, split: str) -> np.ndarray:
    return out.heldout_raw[split].to_pandas()["label"].to_numpy() if split != "train" else None


def test_a_yes_no_label_without_a_timestamp_is_binary_with_yes_positive(ray_local, tmp_path: Path) -> None:
    table = binary_yes_no(1_500)
    ctx, out = _run(tmp_path, table, "features.split.kind=stratified")
    assert out.task.name == "binary" and out.task.describe()["positive"] == "YES"
    assert "rarer" in out.task_reason and out.split_kind == "stratified"
    assert ctx.lineage["task"] == '{"negative":"NO","positive":"YES","task":"binary"}'
    assert sum(out.split_rows.values()) == table.num_rows
    share = np.mean(np.asarray(table["target"]) == "YES")
    for split in ("valid", "test"):
        labels = _labels(out, split)
        assert set(np.unique(labels)) <= {0.0, 1.0}
        assert abs(labels.mean() - share) <= 0.01 + 1 / len(labels)  # stratified: the class share kept
    assert out.baseline_prediction == pytest.approx((out.train_positive_rate,))
    assert out.train_time_range is None


def test_a_string_multiclass_label_keeps_its_classes_in_order(ray_local, tmp_path: Path) -> None:
    table = multiclass_strings(1_500)
    _, out = _run(tmp_path, table, "features.split.kind=stratified")
    assert out.task.name == "multiclass" and out.task.describe()["classes"] == list(CLASSES)
    test = out.heldout_raw["test"].to_pandas()
    # The target is the class's index, and it matches the row's own label value.
    assert (np.asarray(CLASSES)[test["label"].astype(int)] == test["target"]).all()
    shares = np.array(out.baseline_prediction)
    expected = [np.mean(np.asarray(table["target"]) == c) for c in CLASSES]
    assert shares.sum() == pytest.approx(1.0) and shares == pytest.approx(expected, abs=0.01)


def test_a_numeric_target_is_regression_with_the_value_as_target(ray_local, tmp_path: Path) -> None:
    table = regression_numbers(800)
    _, out = _run(tmp_path, table, "features.split.seed=7")
    assert out.task.name == "regression"
    test = out.heldout_raw["test"].to_pandas()
    assert np.allclose(test["label"], test["target"], rtol=1e-6)
    assert 0.7 < out.split_rows["train"] / table.num_rows < 0.9  # fractions 0.8 / 0.1 / 0.1
    assert out.baseline_prediction[0] == pytest.approx(float(pc.mean(table["target"]).as_py()), rel=0.02)


def test_a_group_split_keeps_every_group_in_one_split(ray_local, tmp_path: Path) -> None:
    table = regression_numbers(600).append_column("customer", pa.array([f"c{i % 37}" for i in range(600)]))
    _, out = _run(tmp_path, table, "features.split.kind=group", "features.split.group_column=customer")
    valid = set(out.heldout_raw["valid"].to_pandas()["customer"])
    test = set(out.heldout_raw["test"].to_pandas()["customer"])
    assert valid and test and not valid & test


MISTAKES = [
    (binary_yes_no, ["features.label.column=nope"], "features.label.column", "'nope' is not a column"),
    (binary_yes_no, ["features.label.threshold=0.5"], "features.label.threshold", "needs a numeric label"),
    (binary_yes_no, ["features.label.positive=MAYBE"], "features.label.positive", "['NO', 'YES']"),
    (binary_yes_no, ["features.task=regression"], "features.task", "regression needs a numeric label"),
    (multiclass_strings, ["features.max_classes=2"], "features.max_classes", "more than 2 distinct"),
    (multiclass_strings, ["features.task=binary"], "features.task", "binary needs two label values"),
    (regression_numbers, ["features.split.kind=stratified"], "features.split.kind", "split.kind=random"),
    (regression_numbers, ["features.split.fractions=[0.5,0.2,0.2]"], "features.split.fractions", "sum"),
    (regression_numbers, ["features.split.kind=time"], "features.split.time_column", "is not a column"),
    (regression_numbers, ["features.split.kind=sideways"], "features.split.kind", "stratified"),
]


@pytest.mark.parametrize(("make", "overrides", "key", "words"), MISTAKES)
def test_a_label_or_split_mistake_names_the_key_and_the_fix(
    ray_local, tmp_path: Path, make, overrides, key, words
) -> None:
    with pytest.raises(ConfigError) as caught:
        _run(tmp_path, make(300), *overrides)
    assert caught.value.key == key
    assert words in str(caught.value)


def test_a_label_that_is_null_everywhere_or_one_class_is_refused(ray_local, tmp_path: Path) -> None:
    table = binary_yes_no(300)
    nulls = table.set_column(3, "target", pa.nulls(300, pa.string()))
    with pytest.raises(ConfigError, match="null in every row") as caught:
        _run(tmp_path, nulls)
    assert caught.value.key == "features.label.column"
    one = table.set_column(3, "target", pa.array(["YES"] * 300))
    with pytest.raises(ConfigError, match="one value only"):
        _run(tmp_path, one)


def test_a_time_split_that_leaves_a_split_empty_names_the_dates_and_the_range(ray_local, tmp_path) -> None:
    table = regression_numbers(300)
    days = pa.array(np.datetime64("2024-01-01") + np.arange(300).astype("timedelta64[D]"))
    table = table.append_column("day", days)
    overrides = [
        "features.split.kind=time",
        "features.split.time_column=day",
        "features.split.valid_start=2030-01-01",
        "features.split.test_start=2030-06-01",
    ]
    with pytest.raises(ConfigError) as caught:
        _run(tmp_path, table, *overrides)
    message = str(caught.value)
    assert "2030-01-01" in message and "2024-01-01" in message and "2024-10-26" in message
