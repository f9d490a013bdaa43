"""A pipeline stage written outside the package: nothing in raymlops names it.

A job names it by its class path, ``stages=[ingest,tests.plugins.external_stage:RowCountStage]``, the
way the closed-loop demo names its own stages (``raymlops.loop.stages:LoopStage``).
"""

from __future__ import annotations

from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState


class RowCountStage(Stage):
    """Counts the ingested dataset's rows on Ray and records them beside what the ingest stage reported."""

    name = "row_count"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        ingested = state.require("ingest")
        ctx.record(self.name, counted=ingested.dataset.count(), reported=ingested.num_rows)
        return state


class NotAStage:
    """What a misspelt class path may name: refused with the path in the message."""
