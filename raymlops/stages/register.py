"""register: metrics, reports and the ONNX model into the job's MLflow run; a lineage-tagged model version."""

from __future__ import annotations

from pathlib import Path

from raymlops.pipeline.context import RunContext, git_sha
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState, RegisterOutput
from raymlops.registry.mlflow_registry import ModelRegistry


class RegisterStage(Stage):
    name = "register"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.registry
        ingest, trained = state.require("ingest"), state.require("train")
        evaluated, exported = state.require("evaluate"), state.require("export")
        tracker = ctx.tracker
        if tracker is None:  # run_pipeline opens the job's run for any pipeline with this stage
            raise RuntimeError("register needs the job's MLflow run: run it through run_pipeline.")
        tags = {
            "raymlops.run_id": ctx.run_id,
            "raymlops.run_name": str(ctx.cfg.run_name),
            "raymlops.env": str(ctx.cfg.env.name),
            "raymlops.git_sha": git_sha(),
            "raymlops.data_version": ingest.data_version,
            "raymlops.seed": str(ctx.cfg.seed),
            "raymlops.input_columns": ",".join(f"{k}:{v}" for k, v in exported.input_columns.items()),
        }
        tracker.log_metrics(
            {**evaluated.metrics, **{f"baseline/{k}": v for k, v in evaluated.baseline.items()}},
            trained.history,
        )
        model_files: list[Path] = [exported.onnx_path]
        validation = state.validate
        if validation is not None:
            # The training data's profile travels with the model: monitoring compares live traffic to it.
            model_files.append(validation.profile_path)
            tracker.log_artifacts("reports", [validation.report_path, validation.html_path])
        registry = ModelRegistry(cfg.tracking_uri, cfg.artifact_root, cfg.experiment)
        version = registry.register_version(
            model_name=cfg.model_name, run_id=tracker.run_id, model_files=model_files, tags=tags
        )
        tracker.set_tags({"raymlops.model_name": cfg.model_name, "raymlops.model_version": version.version})
        ctx.lineage.update(tags)
        ctx.record(self.name, model=f"{version.name} v{version.version}", mlflow_run=version.run_id[:8])
        onnx_path = registry.local_artifact(version, exported.onnx_path.name)
        return state.with_(
            register=RegisterOutput(version.name, version.version, version.run_id, version.source, onnx_path)
        )
