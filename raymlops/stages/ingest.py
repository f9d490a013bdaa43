"""ingest: resolve the data reference to an immutable version and read exactly that version."""

from __future__ import annotations

import logging

from raymlops.data.refs import open_backend, parse_ref
from raymlops.data.sampling import sample_rows
from raymlops.data.sources import load_source
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import IngestOutput, PipelineState

logger = logging.getLogger(__name__)


def _seed_delta_table(ref: str, source: str | None) -> None:
    """First run on the embedded default: write the raw source as version 0 of the Delta table."""
    from deltalake import DeltaTable

    from raymlops.data.delta import ensure_table, storage_options

    parsed = parse_ref(ref)
    location = parsed.location
    if (
        parsed.backend == "delta"
        and source
        and not DeltaTable.is_deltatable(location, storage_options=storage_options(location))
    ):
        ensure_table(parsed.location, load_source(source), message=f"initial load from {source}")


class IngestStage(Stage):
    name = "ingest"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.data
        _seed_delta_table(cfg.ref, cfg.source)
        backend = open_backend(cfg.ref, cfg.lakefs)
        data_version = backend.resolve()
        dataset = sample_rows(backend.read(data_version), cfg.sample_fraction, ctx.cfg.seed).materialize()
        num_rows = dataset.count()
        ctx.lineage["data_version"] = str(data_version)
        ctx.record(self.name, rows=num_rows, version=data_version.version)
        logger.info("ingest data_version=%s rows=%d", data_version, num_rows)
        return state.with_(
            ingest=IngestOutput(dataset, str(data_version), dataset.schema().base_schema, num_rows)
        )
