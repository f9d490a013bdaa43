"""deploy: the registered ONNX model behind the Ray Serve router; a few real HTTP requests as a smoke test."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import DeployOutput, PipelineState

logger = logging.getLogger(__name__)


def _json_safe(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime | dt.date) else value


class DeployStage(Stage):
    name = "deploy"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.serving import ModelSpec, deploy, sample_requests

        cfg = ctx.cfg.serve
        registered, exported = state.require("register"), state.require("export")
        spec = ModelSpec(
            name=registered.model_name,
            version=registered.version,
            onnx_path=str(registered.onnx_path),
            data_version=state.require("ingest").data_version,
            input_columns=exported.input_columns,
        )
        url = deploy(
            [spec],
            app_name=cfg.app_name,
            host=cfg.host,
            port=cfg.port,
            route_prefix=cfg.route_prefix,
            num_replicas=cfg.num_replicas,
            replica_cpus=cfg.replica_cpus,
            use_gpu=cfg.use_gpu,
            max_rows_per_request=cfg.max_rows_per_request,
        )
        from raymlops.registry.governance import Governance
        from raymlops.registry.mlflow_registry import ModelRegistry

        Governance(ModelRegistry.from_config(ctx.cfg.registry)).record_deployment(
            registered.model_name, cfg.app_name, {registered.version}, why=f"deploy stage of job {ctx.run_id}"
        )
        sample = state.require("features").raw_sample
        rows = sample.slice(0, cfg.sample_requests).to_pylist()
        records = [{k: _json_safe(v) for k, v in row.items() if k in exported.input_columns} for row in rows]
        answers = sample_requests(url, registered.model_name, records) if records else []
        label = ctx.cfg.features.label.column
        for answer, row in zip(answers, rows, strict=True):
            answer["actual"] = {label: row.get(label)}  # what really happened, for the reader
        ctx.record(
            self.name, url=f"{url}/v1/models/{registered.model_name}/predict", replicas=cfg.num_replicas
        )
        return state.with_(deploy=DeployOutput(url, cfg.app_name, answers))
