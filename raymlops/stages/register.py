"""register: an MLflow run (params, per-epoch metrics, config, ONNX) and a lineage-tagged model version."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from raymlops.pipeline.context import RunContext, git_sha, package_versions
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState, RegisterOutput
from raymlops.registry.mlflow_registry import ModelRegistry


def _flatten(prefix: str, value: object, out: dict[str, object]) -> dict[str, object]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


class RegisterStage(Stage):
    name = "register"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.registry
        ingest, trained = state.require("ingest"), state.require("train")
        evaluated, exported = state.require("evaluate"), state.require("export")
        resolved = OmegaConf.to_container(ctx.cfg, resolve=True)
        assert isinstance(resolved, dict)
        params = _flatten("", {k: resolved[k] for k in ("model", "trainer", "features", "data")}, {})
        tags = {
            "raymlops.run_id": ctx.run_id,
            "raymlops.run_name": str(ctx.cfg.run_name),
            "raymlops.env": str(ctx.cfg.env.name),
            "raymlops.git_sha": git_sha(),
            "raymlops.data_version": ingest.data_version,
            "raymlops.seed": str(ctx.cfg.seed),
            "raymlops.input_columns": ",".join(f"{k}:{v}" for k, v in exported.input_columns.items()),
        }
        metrics = {**evaluated.metrics, **{f"baseline/{k}": v for k, v in evaluated.baseline.items()}}
        texts = {
            "config.yaml": OmegaConf.to_yaml(ctx.cfg, resolve=True),
            "packages.txt": "\n".join(f"{k}=={v}" for k, v in package_versions().items()),
        }
        artifacts: dict[str, list[Path]] = {"model": [exported.onnx_path]}
        validation = state.validate
        if validation is not None:
            # The training data's profile travels with the model: monitoring compares live traffic to it.
            artifacts["model"].append(validation.profile_path)
            artifacts["reports"] = [validation.report_path, validation.html_path]
        registry = ModelRegistry(cfg.tracking_uri, cfg.artifact_root, cfg.experiment)
        version = registry.log_and_register(
            model_name=cfg.model_name,
            run_name=f"{ctx.cfg.run_name}-{ctx.run_id}",
            artifacts=artifacts,
            params=params,
            metrics=metrics,
            history=trained.history,
            texts=texts,
            tags=tags,
        )
        ctx.lineage.update(tags)
        ctx.record(self.name, model=f"{version.name} v{version.version}", mlflow_run=version.run_id[:8])
        onnx_path = registry.local_artifact(version, exported.onnx_path.name)
        return state.with_(
            register=RegisterOutput(version.name, version.version, version.run_id, version.source, onnx_path)
        )
