"""The pipeline runner: stages named in config, run in order, each one's output handed on.

A stage is named by its registered name (:data:`raymlops.config.stages.STAGES`) or its class path
(:mod:`raymlops.pipeline.stage_registry`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

from omegaconf import DictConfig

from raymlops.pipeline.cache import CacheHit, StageCache
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.ray_session import connect_ray
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.stage_registry import stages_from_config
from raymlops.pipeline.state import PipelineState
from raymlops.registry.tags import ENV_TAG, GIT_DIRTY_TAG, GIT_SHA_TAG, RUN_ID_TAG, RUN_NAME_TAG
from raymlops.security.roles import authorize_job
from raymlops.training.gpu import check_gpu_options, cluster_gpus

__all__ = ["run_pipeline"]

logger = logging.getLogger(__name__)


def run_pipeline(
    cfg: DictConfig, ctx: RunContext | None = None, state: PipelineState | None = None
) -> tuple[RunContext, PipelineState]:
    """Run ``cfg.stages`` in order on Ray. Raises the first stage's error; earlier outputs stay untouched.

    ``state``: outputs of earlier stages to start from (e.g. a notebook that trained once and now tries
    other gates with ``stages=[evaluate,export,register]``); a stage named again recomputes its output.
    """
    names = list(cfg.stages)
    if cfg.tune is not None:  # +tune=<option>: the best trial of a search is the trained model
        names = ["tune" if name == "train" else name for name in names]
    stages = stages_from_config(names)
    if not cfg.serve.enabled:
        stages = [s for s in stages if s.name != "deploy"]
    # Every action of the job checked against the caller's role before anything runs (and audited).
    authorize_job(cfg, [s.name for s in stages])
    ctx = ctx or RunContext(cfg)
    connect_ray(cfg.ray)
    # A GPU option this machine cannot honour fails here, naming its key, before any stage runs.
    check_gpu_options(cfg, [s.name for s in stages], cluster_gpus(cfg))
    logger.info(
        "run started run_id=%s run_dir=%s stages=%s", ctx.run_id, ctx.run_dir, [s.name for s in stages]
    )
    state = state if state is not None else PipelineState()
    _resume(ctx)
    started = time.monotonic()
    status = "failed"
    if ctx.tracker is None and _TRACKED_STAGES & {s.name for s in stages}:
        ctx.tracker = _start_tracking(ctx)
    from raymlops.security import crypto

    # security.encryption.enabled: reports, model artifacts and profiles this job writes are encrypted.
    previous_keyring = crypto.active_keyring()
    crypto.configure(crypto.Keyring.from_config(cfg))
    try:
        state = _run_stages(ctx, stages, state)
        status = "succeeded"
    finally:
        crypto.configure(previous_keyring)
        ctx.lineage["total_seconds"] = round(time.monotonic() - started, 2)
        _write_summary(ctx, status)
        if ctx.tracker is not None:
            ctx.tracker.finish(status, ctx.figures, ctx.lineage)
    return ctx, state


def _resume(ctx: RunContext) -> None:
    """``resume=<run id>|last``: the failed run's data version read again, and said in the lineage."""
    from raymlops.pipeline.cache import resume_origin

    origin = resume_origin(ctx.cfg)
    if origin is None:
        return
    run_id, summary = origin
    ctx.lineage["resumed_from"] = run_id
    ctx.pinned_data_version = summary.get("lineage", {}).get("data_version")
    done = list(summary.get("lineage", {}).get("stage_seconds", {}))
    logger.info(
        "resuming run=%s its finished stages=%s data_version=%s", run_id, done, ctx.pinned_data_version
    )


def _run_stages(ctx: RunContext, stages: list[Stage], state: PipelineState) -> PipelineState:
    """Each stage in turn, or its output from the step cache (raymlops.pipeline.cache) if its key matches."""
    import copy

    from raymlops.pipeline.cache import stage_key

    cache = StageCache.from_config(ctx.cfg)
    # Outputs handed in (a notebook's state) came from no key: whatever reads them is not cached.
    by_slot: dict[str, str | None] = {
        f.name: None for f in dataclasses.fields(state) if getattr(state, f.name) is not None
    }
    by_stage: dict[str, str | None] = {}
    for index, stage in enumerate(stages, start=1):
        key = stage_key(stage, ctx, by_stage, by_slot) if cache is not None else None
        started = time.monotonic()
        hit = _cache_load(cache, stage, key, ctx, state) if cache is not None and key is not None else None
        if hit is not None:
            state, slots = hit.state, hit.slots
            ctx.lineage.setdefault("stage_seconds", {})[stage.name] = round(time.monotonic() - started, 2)
            logger.info(
                "[%d/%d] %s cached from run %s (key %s)", index, len(stages), stage.name, hit.run_id, key
            )
        else:
            logger.info("[%d/%d] %s ...", index, len(stages), stage.name)
            before, lineage_before = state, copy.deepcopy(ctx.lineage)
            state = stage.run(ctx, state)
            slots = tuple(
                f.name
                for f in dataclasses.fields(state)
                if getattr(state, f.name) is not getattr(before, f.name)
            )
            if cache is not None and key is not None:
                try:
                    cache.store(stage, key, ctx, before, state, lineage_before)
                except Exception as exc:  # a cache that cannot keep an output costs the next run time only
                    logger.warning(
                        "stage output not cached stage=%s: %s: %s", stage.name, type(exc).__name__, exc
                    )
        by_stage[stage.name] = key
        by_slot.update(dict.fromkeys(slots, key))
    return state


def _cache_load(
    cache: StageCache, stage: Stage, key: str, ctx: RunContext, state: PipelineState
) -> CacheHit | None:
    """The cached output, or None: an entry that cannot be read back (from another raymlops whose classes
    moved, cut short by a full disk) is a miss, and the stage runs."""
    try:
        return cache.load(stage, key, ctx, state)
    except Exception as exc:
        logger.warning(
            "stage cache entry unusable stage=%s key=%s: %s: %s", stage.name, key, type(exc).__name__, exc
        )
        return None


# A job that makes a model is an MLflow run; data-only runs (ingest, validate) write summary.json alone.
_TRACKED_STAGES = {"train", "tune", "register"}


def _start_tracking(ctx: RunContext):  # -> JobTracker
    from omegaconf import OmegaConf

    from raymlops.pipeline.context import git_sha, package_versions
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.registry.tracking import JobTracker

    cfg = ctx.cfg
    registry = ModelRegistry.from_config(cfg.registry)
    sha = git_sha()
    tags = {
        RUN_ID_TAG: ctx.run_id,
        RUN_NAME_TAG: str(cfg.run_name),
        ENV_TAG: str(cfg.env.name),
        GIT_SHA_TAG: sha.removesuffix("-dirty"),
        GIT_DIRTY_TAG: str(sha.endswith("-dirty")).lower(),
        "mlflow.source.git.commit": sha.removesuffix("-dirty"),
    }
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(resolved, dict)
    tracker = JobTracker.start(
        registry, f"{cfg.run_name}-{ctx.run_id}", tags, {str(k): v for k, v in resolved.items()}
    )
    tracker.log_text("packages.txt", "\n".join(f"{k}=={v}" for k, v in package_versions().items()))
    ctx.lineage["mlflow_run_id"] = tracker.run_id
    return tracker


def _write_summary(ctx: RunContext, status: str) -> None:
    summary: dict[str, Any] = {
        "run_id": ctx.run_id,
        "status": status,
        "figures": ctx.figures,
        "lineage": ctx.lineage,
        "cached": ctx.lineage.get("cached", {}),  # stage -> the run whose output it reused
    }
    (ctx.run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
