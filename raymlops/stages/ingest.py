"""ingest: resolve the data reference to an immutable version and read exactly that version."""

from __future__ import annotations

import logging

from raymlops.data.sampling import sample_rows
from raymlops.data.seed import open_seeded
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import IngestOutput, PipelineState

logger = logging.getLogger(__name__)


class IngestStage(Stage):
    name = "ingest"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.data
        # First run on the embedded default: data.source is written as version 0 of the Delta table.
        backend = open_seeded(cfg.ref, cfg.source, cfg.lakefs)
        data_version = backend.resolve()
        dataset = sample_rows(backend.read(data_version), cfg.sample_fraction, ctx.cfg.seed).materialize()
        num_rows = dataset.count()
        ctx.lineage["data_version"] = str(data_version)
        ctx.record(self.name, rows=num_rows, version=data_version.version)
        logger.info("ingest data_version=%s rows=%d", data_version, num_rows)
        return state.with_(ingest=IngestOutput(dataset, data_version, dataset.schema().base_schema, num_rows))
