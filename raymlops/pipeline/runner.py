"""The pipeline runner: stages named in config, run in order, each one's output handed on."""

from __future__ import annotations

import importlib
import json
import logging
import time
from typing import Any

from omegaconf import DictConfig

from raymlops.errors import ConfigError
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.ray_session import connect_ray
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState

__all__ = ["STAGES", "run_pipeline"]

logger = logging.getLogger(__name__)

# Stage name -> class path, imported lazily so that --help and config checks stay fast.
STAGES = {
    "ingest": "raymlops.stages.ingest:IngestStage",
    "validate": "raymlops.stages.validate:ValidateStage",
    "features": "raymlops.stages.features:FeaturesStage",
    "train": "raymlops.stages.train:TrainStage",
    "evaluate": "raymlops.stages.evaluate:EvaluateStage",
    "export": "raymlops.stages.export:ExportStage",
    "register": "raymlops.stages.register:RegisterStage",
    "deploy": "raymlops.stages.deploy:DeployStage",
}


def _stage(name: str) -> Stage:
    if name not in STAGES:
        raise ConfigError(f"stages.{name}", "is not a stage.", STAGES)
    module, cls = STAGES[name].split(":")
    stage: Stage = getattr(importlib.import_module(module), cls)()
    return stage


def run_pipeline(cfg: DictConfig, ctx: RunContext | None = None) -> tuple[RunContext, PipelineState]:
    """Run ``cfg.stages`` in order on Ray. Raises the first stage's error; earlier outputs stay untouched."""
    stages = [_stage(name) for name in cfg.stages]
    if not cfg.serve.enabled:
        stages = [s for s in stages if s.name != "deploy"]
    ctx = ctx or RunContext(cfg)
    connect_ray(cfg.ray)
    logger.info(
        "run started run_id=%s run_dir=%s stages=%s", ctx.run_id, ctx.run_dir, [s.name for s in stages]
    )
    state = PipelineState()
    started = time.monotonic()
    status = "failed"
    try:
        for index, stage in enumerate(stages, start=1):
            logger.info("[%d/%d] %s ...", index, len(stages), stage.name)
            state = stage.run(ctx, state)
        status = "succeeded"
    finally:
        ctx.lineage["total_seconds"] = round(time.monotonic() - started, 2)
        _write_summary(ctx, status)
    return ctx, state


def _write_summary(ctx: RunContext, status: str) -> None:
    summary: dict[str, Any] = {
        "run_id": ctx.run_id,
        "status": status,
        "figures": ctx.figures,
        "lineage": ctx.lineage,
    }
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
