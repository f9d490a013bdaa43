"""The flights_loop demo's stages, named by class path in ``configs/experiment/flights_loop*.yaml``
(``raymlops.loop.stages:LoopSeedStage`` ...), not registered among the production stages:

- ``loop_seed`` (first): the demo's own Delta table (``loop.table``) holding ``loop.train_months`` only;
- ``loop_fault`` (after export, in retrains of ``flights_loop_broken``): a candidate with shifted predictions;
- ``loop`` (last): replay the later months as live traffic and close the loop (:mod:`raymlops.loop.demo`).
"""

from __future__ import annotations

from typing import Any

from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState


class LoopSeedStage(Stage):
    name = "loop_seed"
    in_retrain = False  # a retrain reads the table as it is by then

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
    in_retrain = False

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.loop.demo import run_loop

        ctx.record(self.name, **run_loop(ctx, state, retrain_stages(ctx.cfg)))
        return state


def retrain_stages(cfg: Any) -> list[str]:
    """``loop.retrain_stages``, or the job's training stages without explain (SHAP is not needed to decide
    a rollout); ``loop_fault`` after export when ``loop.fault`` asks for a broken candidate."""
    from raymlops.pipeline.stage_registry import class_path, stage_class, stage_name

    if cfg.loop.retrain_stages:
        stages = [str(s) for s in cfg.loop.retrain_stages]
    else:
        skipped = ("explain", LoopFaultStage.name)
        stages = [str(s) for s in cfg.stages if stage_class(s).in_retrain and stage_name(s) not in skipped]
    names = [stage_name(s) for s in stages]
    if str(cfg.loop.fault.value) != "none" and LoopFaultStage.name not in names:
        stages.insert(names.index("export") + 1, class_path(LoopFaultStage))
    return stages
