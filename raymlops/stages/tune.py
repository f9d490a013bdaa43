"""tune: search the model's hyper-parameters on Ray Tune; the best trial's model is the stage's output.

It runs in place of ``train`` when the job has ``+tune=<option>``, and hands on a ``TrainOutput`` so
evaluate, export and register go on unchanged. Every trial, early-stopped ones included, is kept in
``tune_trials.json`` and, when the run is tracked, as child runs of the job's tracking run.
"""

from __future__ import annotations

import json
import logging

from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState, TrainOutput
from raymlops.training.tune_space import validate_tune

logger = logging.getLogger(__name__)


class TuneStage(Stage):
    name = "tune"
    cacheable = True
    cache_inputs = ("features",)
    cache_config = ("model", "trainer", "tune", "seed")
    cache_files = ("tune_trials.json",)

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.training.tune import tune_model

        validate_tune(ctx.cfg.tune, ctx.cfg.model)  # before anything runs, the features included
        features = state.require("features")
        search, model = tune_model(
            ctx.cfg,
            {"train": features.train, "valid": features.valid},
            features.preprocessor.num_features,
            tune_path=str(ctx.state_dir / "ray_tune"),
            train_path=str(ctx.state_dir / "ray_train" / ctx.run_id),
            name=ctx.run_id,
            task=features.task,
        )
        (ctx.run_dir / "tune_trials.json").write_text(json.dumps(search.trials, indent=2, default=str))
        tracker = getattr(ctx, "tracker", None)
        if tracker is not None:
            tracker.log_trials(search.trials)
        ctx.record(
            self.name,
            trials=len(search.trials),
            stopped_early=search.stopped_early,
            failed=sum(t["error"] is not None for t in search.trials),
            **{f"best_{search.metric}": round(search.best_metric, 4)},
            best_params=search.best_params,
        )
        logger.info(
            "search finished trials=%d stopped_early=%d best %s=%.4f params=%s",
            len(search.trials),
            search.stopped_early,
            search.metric,
            search.best_metric,
            search.best_params,
        )
        best = next(t for t in search.trials if t["best"])
        return state.with_(train=TrainOutput(model, best["history"], str(search.best_checkpoint.path)))
