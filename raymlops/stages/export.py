"""export: preprocessing + model as one ONNX graph, checked against the Python pipeline."""

from __future__ import annotations

from raymlops.models.export import export_pipeline
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import ExportOutput, PipelineState


class ExportStage(Stage):
    name = "export"
    cacheable = True
    cache_inputs = ("features", "train")
    cache_config = ("export",)

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.export
        features, trained = state.require("features"), state.require("train")
        path = ctx.run_dir / "model.onnx"
        diff = export_pipeline(
            features.preprocessor,
            trained.model,
            features.raw_sample,
            path,
            opset=cfg.opset,
            tolerance=cfg.parity_tolerance,
        )
        ctx.record(self.name, parity_max_abs_diff=f"{diff:.1e}", onnx_kb=round(path.stat().st_size / 1024))
        return state.with_(export=ExportOutput(path, features.preprocessor.input_columns, diff))
