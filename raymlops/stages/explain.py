"""explain: global SHAP per raw input feature (JSON + summary plot) and the per-request explainer that is
packaged with the model version, so serving can answer ``/explain`` with the same background. Every task:
the explanation has the task's shape (one value per column and class for multiclass)."""

from __future__ import annotations

from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import ExplainOutput, PipelineState


class ExplainStage(Stage):
    name = "explain"
    cacheable = True
    cache_inputs = ("features", "train", "export")
    cache_config = ("explain", "seed")

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.evaluation.shap_summary import explain_model

        cfg = ctx.cfg.explain
        features, trained = state.require("features"), state.require("train")
        exported = state.require("export")
        if features.background is None:
            raise RuntimeError("explain needs the features stage's background sample.")
        result = explain_model(
            trained.model,
            features.preprocessor,
            exported.onnx_path,
            features.background,
            features.raw_sample,  # random-free but unseen rows: a sample of the test split
            ctx.run_dir / "explain",
            background_rows=cfg.background_rows,
            explain_rows=cfg.rows,
            seed=ctx.cfg.seed,
            task=features.task,
        )
        summary = result.summary.to_dict()
        top = list(result.summary.mean_abs.items())[:3]
        ctx.record(
            self.name,
            method=result.summary.method,
            rows=result.summary.rows,
            seconds=round(result.summary.seconds, 2),
            top=", ".join(f"{c} {v:.3g}" for c, v in top),
        )
        return state.with_(
            explain=ExplainOutput(summary, result.summary_json, result.plot_png, result.explainer_dir)
        )
