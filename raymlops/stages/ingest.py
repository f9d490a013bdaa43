"""ingest: resolve the data reference to an immutable version and read exactly that version."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from raymlops.data.refs import parse_version
from raymlops.data.sampling import sample_rows
from raymlops.data.seed import open_seeded
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import IngestOutput, PipelineState

if TYPE_CHECKING:
    from raymlops.data.versioning import DataVersion

logger = logging.getLogger(__name__)

# Training on published feedback rows as well (retrain.include_feedback / feedback_only) reads a second table.
_FEEDBACK_KEYS = ("include_feedback", "feedback_only")


class IngestStage(Stage):
    name = "ingest"
    cacheable = True
    cache_inputs = ()  # its input is the data version (cache_key_extra)
    cache_config = ("data.ref", "data.sample_fraction", "seed")

    def cache_key_extra(self, ctx: RunContext) -> dict[str, Any] | None:
        from omegaconf import OmegaConf

        if any(OmegaConf.select(ctx.cfg, f"retrain.{k}", default=False) for k in _FEEDBACK_KEYS):
            return None  # rows of a second table come in: its version is not in the key
        return {"data_version": str(self._version(ctx))}

    def _version(self, ctx: RunContext) -> DataVersion:
        """What data.ref resolves to now, or under resume=<run> the version the failed run read."""
        cfg = ctx.cfg.data
        # First run on the embedded default: data.source is written as version 0 of the Delta table.
        backend = open_seeded(cfg.ref, cfg.source, cfg.lakefs)
        if ctx.pinned_data_version:
            return parse_version(ctx.pinned_data_version, "resume")
        return backend.resolve()

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.data.frames import to_dataset
        from raymlops.data.local_read import plan_read

        cfg = ctx.cfg.data
        backend = open_seeded(cfg.ref, cfg.source, cfg.lakefs)
        data_version = self._version(ctx)
        arrow = backend.arrow_dataset(data_version)
        plan = plan_read(ctx.cfg.execution, arrow)
        table = None
        if plan.local:  # one read in this process; Ray gets the rows as blocks, without read tasks
            table = sample_rows(arrow.to_table(), cfg.sample_fraction, ctx.cfg.seed)
            dataset = to_dataset(table)
        else:
            dataset = sample_rows(backend.read(data_version), cfg.sample_fraction, ctx.cfg.seed).materialize()
        num_rows = table.num_rows if table is not None else dataset.count()
        ctx.lineage["data_version"] = str(data_version)
        ctx.record(self.name, rows=num_rows, version=data_version.version, execution=plan.path)
        logger.info(
            "ingest data_version=%s rows=%d execution=%s (%s)", data_version, num_rows, plan.path, plan.reason
        )
        schema = table.schema if table is not None else dataset.schema().base_schema
        return state.with_(ingest=IngestOutput(dataset, data_version, schema, num_rows, table=table))
