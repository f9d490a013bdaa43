"""train: build the configured model family and fit it on Ray Train."""

from __future__ import annotations

import logging

from raymlops.models.registry import build_model
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState, TrainOutput

logger = logging.getLogger(__name__)


class TrainStage(Stage):
    name = "train"
    cacheable = True
    cache_inputs = ("features",)
    cache_config = ("model", "trainer", "seed")

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        features = state.require("features")
        model = build_model(ctx.cfg.model)
        storage_path = str(ctx.state_dir / "ray_train" / ctx.run_id)
        model.fit(
            {"train": features.train, "valid": features.valid},
            features.preprocessor.num_features,
            ctx.cfg.trainer,
            storage_path,
            ctx.cfg.seed,
            preprocessor=features.preprocessor,
            task=features.task,
        )
        last = model.history_[-1] if model.history_ else {}
        ctx.record(
            self.name,
            model=type(model).__name__,
            workers=ctx.cfg.trainer.scaling.num_workers,
            **{k: round(v, 4) for k, v in last.items() if k.startswith("valid/") and isinstance(v, float)},
        )
        return state.with_(train=TrainOutput(model, list(model.history_), model.checkpoint_path_))
