"""evaluate: metrics on the held-out split against a constant baseline; gates stop the run."""

from __future__ import annotations

import logging

import numpy as np

from raymlops.errors import ConfigError, GateFailedError
from raymlops.evaluation.metrics import binary_metrics, check_gates
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import EvaluateOutput, PipelineState

logger = logging.getLogger(__name__)


def _collect(ds) -> tuple[np.ndarray, np.ndarray]:  # ds: ray.data.Dataset with x, y
    xs, ys = [], []
    for batch in ds.iter_batches(batch_format="numpy", batch_size=65536):
        xs.append(batch["x"])
        ys.append(batch["y"])
    return np.concatenate(xs), np.concatenate(ys)


class EvaluateStage(Stage):
    name = "evaluate"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.evaluate
        features, trained = state.require("features"), state.require("train")
        if cfg.split not in ("valid", "test"):
            raise ConfigError("evaluate.split", f"{cfg.split!r} is not a held-out split.", ["valid", "test"])
        x, y = _collect(getattr(features, cfg.split))
        metrics = binary_metrics(y, trained.model.predict_proba(x), cfg.split)
        # The constant predictor of the train prevalence: what the model must clearly beat.
        baseline = binary_metrics(y, np.full(len(y), features.train_positive_rate), cfg.split)
        failures = check_gates(metrics, cfg.gates)
        auc, logloss = f"{cfg.split}/auc", f"{cfg.split}/logloss"
        ctx.record(
            self.name,
            auc=round(metrics[auc], 4),
            baseline_auc=round(baseline[auc], 4),
            logloss=round(metrics[logloss], 4),
            baseline_logloss=round(baseline[logloss], 4),
            accuracy=round(metrics[f"{cfg.split}/accuracy"], 4),
        )
        logger.info("evaluate metrics=%s baseline=%s", metrics, baseline)
        if failures:
            raise GateFailedError(failures, metrics)
        return state.with_(evaluate=EvaluateOutput(metrics, baseline, True))
