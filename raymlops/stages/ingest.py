"""ingest: resolve the data reference to an immutable Delta version and read it with Ray Data."""

from __future__ import annotations

import logging

from raymlops.data.delta import DeltaVersion, ensure_table, read_version, resolve_version
from raymlops.data.sampling import sample_rows
from raymlops.data.sources import load_source
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import IngestOutput, PipelineState

logger = logging.getLogger(__name__)


class IngestStage(Stage):
    name = "ingest"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.data
        from deltalake import DeltaTable

        if not DeltaTable.is_deltatable(cfg.table_uri):
            # First run: write the raw source as version 0. Later runs read the pinned version.
            ensure_table(cfg.table_uri, load_source(cfg.source), message=f"initial load from {cfg.source}")
        version = resolve_version(cfg.table_uri, cfg.version)
        dataset = read_version(cfg.table_uri, version)
        dataset = sample_rows(dataset, cfg.sample_fraction, ctx.cfg.seed)
        dataset = dataset.materialize()
        data_version = DeltaVersion.of(cfg.table_uri, version)
        num_rows = dataset.count()
        ctx.lineage["data_version"] = str(data_version)
        ctx.record(self.name, rows=num_rows, version=version)
        logger.info("ingest data_version=%s rows=%d", data_version, num_rows)
        return state.with_(
            ingest=IngestOutput(dataset, str(data_version), dataset.schema().base_schema, num_rows)
        )
