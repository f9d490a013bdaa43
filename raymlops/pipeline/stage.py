"""Stage base class: the public ``run`` is final and adds timing, logging and error translation."""

from __future__ import annotations

import abc
import logging
import time
from typing import ClassVar, final

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

    @abc.abstractmethod
    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState: ...
