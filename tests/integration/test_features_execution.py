"""The features stage in one process and on Ray Data over blocks: the same kernels, the same splits, the
same fitted preprocessing and the same model inputs; ``execution.*`` picks the path (issue 18, point 1)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from raymlops.data.frames import plan_execution
from raymlops.errors import ConfigError
from tests.task_tables import binary_yes_no, multiclass_strings, regression_numbers, table_overrides

ROWS = 1_200


def _table(make) -> pa.Table:
    table = make(ROWS)
    start = np.datetime64("2024-01-01T00:00:00", "s")
    when = start + np.arange(ROWS).astype("timedelta64[h]") * 6  # 300 days, in time order
    extra = {"row_id": np.arange(ROWS), "when": when, "customer": [f"c{i % 41}" for i in range(ROWS)]}
    for name, values in extra.items():
        table = table.append_column(name, pa.array(values))
    return table


def _ingested(tmp_path: Path, table: pa.Table, overrides: list[str]):
    """The ingest stage's output once, its rows cut into 5 blocks so the distributed path merges partials."""
    import ray

    from raymlops.config import compose
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.state import PipelineState
    from raymlops.stages.ingest import IngestStage

    path = tmp_path / "table.parquet"
    pq.write_table(table, path)
    base = [f"state_dir={tmp_path}", *table_overrides(path), "explain.background_rows=10", *overrides]
    state = IngestStage().run(RunContext(compose(base)), PipelineState())
    ingest = state.require("ingest")
    blocks = [table.slice(start, ROWS // 5) for start in range(0, ROWS, ROWS // 5)]
    # Both paths start from these blocks (table=None: not from the Table ingest read in this process).
    ingest = dataclasses.replace(ingest, dataset=ray.data.from_blocks(blocks), table=None)
    return base, state.with_(ingest=ingest)


def _features(base: list[str], state, mode: str):
    from raymlops.config import compose
    from raymlops.pipeline.context import RunContext
    from raymlops.stages.features import FeaturesStage

    ctx = RunContext(compose([*base, f"execution.mode={mode}"]))
    return ctx, FeaturesStage().run(ctx, state).require("features")


def _rows(ds) -> tuple[np.ndarray, np.ndarray]:
    """x and y with the rows in one canonical order (the paths differ in row order, not in rows)."""
    batch = ds.take_batch(batch_size=ROWS, batch_format="numpy")
    x, y = np.asarray(batch["x"]), np.asarray(batch["y"])
    order = np.lexsort(np.column_stack([x, y]).T[::-1])
    return x[order], y[order]


SPLITS = {
    "time": [
        "features.split.kind=time",
        "features.split.time_column=when",
        "features.split.valid_start=2024-07-20",
        "features.split.test_start=2024-09-10",
    ],
    "random": ["features.split.kind=random"],
    "stratified": ["features.split.kind=stratified"],
    "group": ["features.split.kind=group", "features.split.group_column=customer"],
}
CASES = [  # every task with a time and a hash split, every split kind at least once
    (binary_yes_no, "time"),
    (binary_yes_no, "stratified"),
    (multiclass_strings, "time"),
    (multiclass_strings, "stratified"),
    (regression_numbers, "random"),
    (regression_numbers, "group"),
]


@pytest.mark.parametrize(("make", "split"), CASES, ids=[f"{m.__name__}-{s}" for m, s in CASES])
def test_both_paths_give_the_same_splits_preprocessing_and_rows(
    ray_local, tmp_path: Path, make, split
) -> None:
    base, state = _ingested(tmp_path, _table(make), SPLITS[split])
    ctx_local, local = _features(base, state, "local")
    ctx_ray, ray_out = _features(base, state, "distributed")
    assert ctx_local.figures["features"]["execution"] == "local"
    assert ctx_ray.figures["features"]["execution"] == "distributed"
    assert "execution.mode=local" in ctx_local.figures["features"]["execution_reason"]

    assert local.split_rows == ray_out.split_rows and sum(local.split_rows.values()) == ROWS
    for name in ("valid", "test"):  # the same rows in each split (train: the rest), with the same target
        ours, theirs = (out.heldout_raw[name].to_pandas().sort_values("row_id") for out in (local, ray_out))
        assert ours["row_id"].tolist() == theirs["row_id"].tolist()
        assert np.array_equal(ours["label"].to_numpy(), theirs["label"].to_numpy())
    assert local.task == ray_out.task and local.task_reason == ray_out.task_reason

    a, b = local.preprocessor, ray_out.preprocessor
    assert (a.numeric, a.categorical, a.categories) == (b.numeric, b.categorical, b.categories)
    # Moments merged over 5 blocks vs computed on one: equal to the last few bits.
    assert a.means == pytest.approx(b.means, rel=1e-12) and a.stds == pytest.approx(b.stds, rel=1e-12)
    assert local.train_positive_rate == pytest.approx(ray_out.train_positive_rate, rel=1e-12)
    for name in ("train", "valid", "test"):
        (x_local, y_local), (x_ray, y_ray) = _rows(getattr(local, name)), _rows(getattr(ray_out, name))
        assert x_local.dtype == x_ray.dtype == np.float32 and np.array_equal(y_local, y_ray)
        assert np.allclose(x_local, x_ray, rtol=0, atol=1e-6)
    # The local path hands on materialized Datasets with the columns the Ray Data path makes.
    assert local.train.schema().names == ray_out.train.schema().names == ["x", "y"]
    if split == "time":
        assert local.train_time_range == ray_out.train_time_range


def test_auto_runs_locally_within_both_limits_and_says_why() -> None:
    def plan(rows: int, size: int | None, **limits: int):
        cfg = OmegaConf.create({"mode": "auto", "local_max_rows": 1_000, "local_max_bytes": 10_000, **limits})
        return plan_execution(cfg, rows, size)

    assert plan(1_000, 10_000).path == "local"
    assert "1000 rows <= execution.local_max_rows=1000" in plan(1_000, 10_000).reason
    too_many = plan(1_001, 10)
    assert too_many.path == "distributed" and "execution.local_max_rows=1000" in too_many.reason
    too_big = plan(10, 10_001)
    assert too_big.path == "distributed" and "execution.local_max_bytes=10000" in too_big.reason
    assert plan(10, None).path == "distributed"  # a size not known without reading: not collected
    assert plan(10, 10, local_max_rows=0).path == "distributed"


def test_execution_mode_forces_a_path_and_a_bad_value_names_the_key(ray_local, tmp_path: Path) -> None:
    base, state = _ingested(tmp_path, _table(regression_numbers), SPLITS["random"])
    auto_ctx, _ = _features(base, state, "auto")
    assert auto_ctx.figures["features"]["execution"] == "local"  # 1,200 rows: within the defaults
    with pytest.raises(ConfigError) as caught:
        _features(base, state, "everywhere")
    assert caught.value.key == "execution.mode"
    assert caught.value.choices == ("auto", "distributed", "local")
    with pytest.raises(ConfigError) as negative:
        plan_execution(OmegaConf.create({"mode": "auto", "local_max_rows": -1, "local_max_bytes": 0}), 1, 1)
    assert negative.value.key == "execution.local_max_rows"
