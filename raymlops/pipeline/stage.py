"""Stage base class: the public ``run`` is final and adds timing, logging and error translation."""

from __future__ import annotations

import abc
import logging
import time
from typing import Any, ClassVar, final

from raymlops.errors import RayMLOpsError, StageError
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.state import PipelineState

__all__ = ["Stage"]

logger = logging.getLogger(__name__)


class Stage(abc.ABC):
    """One step of the pipeline. Subclasses implement ``_run`` and return a new state.

    Stages read what they need from the state with ``state.require(...)`` and add their own
    frozen output; they never mutate registry, data or deployments until their work succeeded.
    """

    name: ClassVar[str]
    # False for a stage that watches or drives models rather than makes one (monitor, the closed-loop
    # demo's seed and replay): a retrain (raymlops.loop.retrain) runs the job's stages without it.
    in_retrain: ClassVar[bool] = True

    # The step cache (raymlops.pipeline.cache, docs/cache.md). Off for a stage unless it says so: a stage
    # of one's own, deploy and monitor always run.
    cacheable: ClassVar[bool] = False
    # The state slots whose outputs it reads (their keys are part of its key); None: every earlier stage.
    cache_inputs: ClassVar[tuple[str, ...] | None] = None
    # The dotted config keys it reads; None: the whole config but serve, monitor, retrain, loop and ray.
    cache_config: ClassVar[tuple[str, ...] | None] = None
    # Files it writes into the run's folder that no output names (they are stored and restored too).
    cache_files: ClassVar[tuple[str, ...]] = ()
    # Part of the key beside its module's source: bump it when a library the stage calls changed what it
    # produces (the source digest covers the stage's own module only).
    cache_version: ClassVar[str] = "1"

    @final
    def run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        started = time.monotonic()
        logger.info("stage started stage=%s run_id=%s", self.name, ctx.run_id)
        try:
            new_state = self._run(ctx, state)
        except RayMLOpsError:
            raise  # already says what went wrong
        except Exception as exc:
            raise StageError(self.name, ctx.run_id, f"{type(exc).__name__}: {exc}") from exc
        elapsed_s = time.monotonic() - started
        ctx.figures.setdefault(self.name, {})
        ctx.lineage.setdefault("stage_seconds", {})[self.name] = round(elapsed_s, 2)
        logger.info("stage finished stage=%s elapsed_s=%.1f", self.name, elapsed_s)
        return new_state

    def cache_key_extra(self, ctx: RunContext) -> dict[str, Any] | None:
        """Inputs of the key that are neither earlier outputs nor config (ingest: the data version the
        reference resolves to now); None: not cacheable in this run."""
        return {}

    def cache_reuse(self, ctx: RunContext, restored: PipelineState, source_run: str) -> str | None:
        """Why a restored output (computed by run ``source_run``) must not be reused now, or None to reuse
        it; a stage whose output depends on the world outside its inputs checks that world here."""
        return None

    @abc.abstractmethod
    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState: ...
