"""Ingest and validate in one process or on Ray Data: a version that fits one process (its parquet footers
say so) is read into one Table and validated there, with the same rows and the same report as the
distributed path (issue 18, adaptive execution)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raymlops.config import compose
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.state import PipelineState
from raymlops.stages.ingest import IngestStage
from raymlops.stages.validate import ValidateStage
from tests.task_tables import binary_yes_no, table_overrides

pytestmark = pytest.mark.usefixtures("ray_local")

ROWS = 3_000
RULES = [
    "validate.min_rows=100",
    "validate.unique.key=[row_id]",
    "validate.columns={}",
    "validate.fail_on_error=false",  # cat has "z" rows: a failure both paths must report alike
]


def _run(base: list[str], mode: str) -> tuple[RunContext, PipelineState]:
    from omegaconf import open_dict

    from raymlops.config.schema import ColumnRule

    cfg = compose([*base, f"execution.mode={mode}"])
    with open_dict(cfg.validate.columns):  # rules for this table's columns (the default ones are flights')
        cfg.validate.columns["num_a"] = ColumnRule(type="numeric", max_null_fraction=0.0)
        cfg.validate.columns["cat"] = ColumnRule(type="string", allowed=["x", "y"])
    ctx = RunContext(cfg)
    state = IngestStage().run(ctx, PipelineState())
    return ctx, ValidateStage().run(ctx, state)


def _report(ctx: RunContext) -> dict:
    import json

    report = json.loads((ctx.run_dir / "validation_report.json").read_text())
    return {k: v for k, v in report.items() if k not in ("driver_bytes", "key_buckets", "generated_at")}


def test_a_small_version_is_read_and_validated_in_one_process_with_the_same_rows_and_report(
    tmp_path: Path,
) -> None:
    table = binary_yes_no(ROWS).append_column("row_id", pa.array(np.arange(ROWS)))
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=500)
    base = [f"state_dir={tmp_path}", *table_overrides(path), *RULES, "data.sample_fraction=0.5"]

    outs = {mode: _run(base, mode) for mode in ("auto", "distributed")}
    (ctx_auto, local), (ctx_ray, distributed) = outs["auto"], outs["distributed"]
    assert ctx_auto.figures["ingest"]["execution"] == "local"  # 3,000 rows: the default limits say so
    assert ctx_ray.figures["ingest"]["execution"] == "distributed"
    ours, theirs = local.require("ingest"), distributed.require("ingest")
    assert ours.table is not None and theirs.table is None
    assert ours.num_rows == theirs.num_rows and 0.4 * ROWS < ours.num_rows < 0.6 * ROWS  # the same sample
    rows = pa.concat_tables(distributed.require("ingest").dataset.iter_batches(batch_format="pyarrow"))
    assert ours.table.sort_by("row_id").equals(rows.sort_by("row_id"))
    assert ours.schema == theirs.schema
    assert ours.dataset.count() == ours.num_rows  # later stages that take the Dataset see the same rows

    report = _report(ctx_auto)
    assert report == _report(ctx_ray)
    assert any("allowed" in failure for failure in report["failures"])


def test_a_csv_version_reads_through_ray_data_unless_local_is_asked_for(tmp_path: Path) -> None:
    table = binary_yes_no(500).append_column("row_id", pa.array(np.arange(500)))
    path = tmp_path / "rows.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(table.column_names)
        writer.writerows(zip(*(table[c].to_pylist() for c in table.column_names), strict=True))
    base = [f"state_dir={tmp_path}", *table_overrides(path), *RULES]
    ctx, state = _run(base, "auto")
    assert ctx.figures["ingest"]["execution"] == "distributed"  # a CSV's rows are not in a footer
    ctx_local, local = _run(base, "local")
    assert ctx_local.figures["ingest"]["execution"] == "local"
    assert local.require("ingest").num_rows == state.require("ingest").num_rows == 500
