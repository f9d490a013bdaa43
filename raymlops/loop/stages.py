"""The flights_loop demo's stages, named in ``configs/experiment/flights_loop*.yaml``:

- ``loop_seed`` (first): the demo's own Delta table (``loop.table``) holding ``loop.train_months`` only;
- ``loop_fault`` (after export, in retrains of ``flights_loop_broken``): a candidate with shifted predictions;
- ``loop`` (last): replay the later months as live traffic and close the loop (:mod:`raymlops.loop.demo`).
"""

from __future__ import annotations

from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState


class LoopSeedStage(Stage):
    name = "loop_seed"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.data.refs import parse_ref
        from raymlops.data.sources import load_source
        from raymlops.errors import ConfigError
        from raymlops.loop.months import seed_table

        loop = ctx.cfg.loop
        ref = parse_ref(str(ctx.cfg.data.ref))
        if ref.backend != "delta" or ref.location != str(loop.table) or ref.pin is not None:
            raise ConfigError(
                "data.ref",
                f"must be delta:{loop.table} (unpinned) for the loop demo, got {ctx.cfg.data.ref!r}.",
            )
        version = seed_table(str(loop.table), load_source(str(loop.source)), list(loop.train_months))
        ctx.record(
            self.name, table=str(loop.table), months=",".join(map(str, loop.train_months)), version=version
        )
        return state


class LoopFaultStage(Stage):
    name = "loop_fault"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.loop.fault import shift_predictions

        loop = ctx.cfg.loop
        if str(loop.fault.value) == "shift":
            shift_predictions(state.require("export").onnx_path, float(loop.fault_shift))
            ctx.record(self.name, fault=f"every probability + {float(loop.fault_shift):g}")
        else:
            ctx.record(self.name, fault="none")
        return state


class LoopStage(Stage):
    name = "loop"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.loop.demo import run_loop

        ctx.record(self.name, **run_loop(ctx, state))
        return state
