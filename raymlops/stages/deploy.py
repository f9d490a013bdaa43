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
        from raymlops.features.online.lookup import lookup_for_config
        from raymlops.registry.governance import Governance
        from raymlops.registry.mlflow_registry import ModelRegistry
        from raymlops.registry.tags import TASK_TAG
        from raymlops.security.integrity import Signer, onnx_digest
        from raymlops.serving import ModelSpec, sample_requests
        from raymlops.serving.operations import (
            api_key_headers,
            check_app_env,
            check_artifacts,
            deploy_from_config,
            served_versions,
        )
        from raymlops.serving.spec import task_description

        cfg = ctx.cfg.serve
        registered, exported = state.require("register"), state.require("export")
        tags = (
            ModelRegistry.from_config(ctx.cfg.registry)
            .version(registered.model_name, registered.version)
            .tags
        )
        label = f"{registered.model_name} v{registered.version}"
        spec = ModelSpec(
            name=registered.model_name,
            version=registered.version,
            onnx_path=str(registered.onnx_path),
            data_version=state.require("ingest").data_version,
            input_columns=exported.input_columns,
            placement=str(cfg.placement.value),
            # Trained with feature views: the router fetches them from the online store by entity key.
            feature_lookup=lookup_for_config(ctx.cfg, exported.input_columns),
            # Serving loads only the bytes registered (digest checked; signature verified here).
            digest=onnx_digest(tags, Signer.from_config(ctx.cfg.security.signing), label),
            task=task_description(tags.get(TASK_TAG), label),  # the answers' shape
        )
        governance = Governance.from_config(ctx.cfg)
        check_app_env(cfg.app_name, str(ctx.cfg.env.name))  # an experiment never touches prod traffic
        if spec.feature_lookup is not None:
            self._materialize(ctx, [v.view for v in spec.feature_lookup.views])
        check_artifacts(ctx.cfg, [spec])  # a tampered graph: IntegrityError, audited, nothing deployed
        strategy = str(cfg.strategy.value)
        live = (served_versions(cfg.app_name, spec.name) or {}) if strategy in ("rollout", "shadow") else {}
        # A shadow joins the versions that answer (at weight 0); with nothing live there is nothing to
        # shadow or roll out against, and the version is deployed as with ``replace``.
        if strategy == "shadow" and live and live.get(spec.version, 0.0) <= 0:
            url, outcome = self._shadow(ctx, spec, governance)
        elif strategy == "rollout" and live and spec.version not in live:
            url, outcome = self._rollout(ctx, spec, governance)
        else:
            url = deploy_from_config(ctx.cfg, [spec])
            governance.record_deployment(
                spec.name, cfg.app_name, {spec.version}, why=f"deploy stage of job {ctx.run_id}"
            )
            outcome = "replaced"
        sample = state.require("features").raw_sample
        rows = sample.slice(0, cfg.sample_requests).to_pylist()
        records = [{k: _json_safe(v) for k, v in row.items() if k in spec.request_columns} for row in rows]
        if cfg.auth.enabled and not api_key_headers():
            logger.info("sample requests skipped: serve.auth is on and RAYMLOPS_API_KEY is not set")
            records = []
        answers = sample_requests(url, spec.name, records, headers=api_key_headers()) if records else []
        label = ctx.cfg.features.label.column
        for answer, row in zip(answers, rows, strict=True):
            answer["actual"] = {label: row.get(label)}  # what really happened, for the reader
        ctx.record(
            self.name, url=f"{url}/v1/models/{spec.name}/predict", replicas=cfg.num_replicas, outcome=outcome
        )
        return state.with_(deploy=DeployOutput(url, cfg.app_name, answers))

    @staticmethod
    def _materialize(ctx: RunContext, names: list[str]) -> None:
        """A model trained with views serves their latest values: fill the online store with the views
        it has never held (later updates are ``python -m raymlops features materialize``'s job)."""
        from omegaconf import OmegaConf

        from raymlops.features.materialize import ensure_materialized
        from raymlops.features.online import open_online_store
        from raymlops.features.views import load_views

        store = open_online_store(OmegaConf.to_container(ctx.cfg.features.online_store, resolve=True))  # type: ignore[arg-type]
        try:
            views = load_views(names, state_dir=str(ctx.cfg.state_dir), check_columns=False)
            states = ensure_materialized(views, store, lakefs=ctx.cfg.data.lakefs)
        finally:
            store.close()
        if states:
            ctx.record("deploy", materialized=",".join(f"{s.view}={s.entities}" for s in states))

    @staticmethod
    def _shadow(ctx: RunContext, spec: Any, governance: Any) -> tuple[str, str]:
        """``serve.strategy=shadow``: the new version scores ``serve.shadow_fraction`` of the live app's
        requests and never answers; the champion keeps answering. It gets the ``shadow`` alias."""
        from raymlops.serving.shadow import check_fraction, start_shadow

        cfg = ctx.cfg.serve
        fraction = check_fraction(cfg.shadow_fraction, "serve.shadow_fraction")
        if governance.aliases(spec.name).get("champion") == spec.version:
            logger.warning(
                "deploy shadow: %s v%s holds `champion` (registry.on_pass=champion) yet only shadows; "
                "set registry.on_pass=shadow (or none) with serve.strategy=shadow",
                spec.name,
                spec.version,
            )
        why = f"deploy stage of job {ctx.run_id} (serve.strategy=shadow)"
        app = start_shadow(cfg.app_name, spec.name, spec, fraction, governance, why=why)
        ctx.record("deploy", shadow_fraction=fraction)
        return app.url, "shadowed"

    @staticmethod
    def _rollout(ctx: RunContext, spec: Any, governance: Any) -> tuple[str, str]:
        """``serve.strategy=rollout``: step the new version up against what the app serves."""
        from omegaconf import OmegaConf

        from raymlops.errors import GateFailedError
        from raymlops.serving.operations import live_app, progressive_rollout
        from raymlops.serving.rollout import RolloutPolicy

        cfg = ctx.cfg.serve
        policy = RolloutPolicy.from_config(OmegaConf.to_container(cfg.rollout))  # type: ignore[arg-type]
        result = progressive_rollout(cfg.app_name, spec.name, spec, policy, governance)
        if result.outcome != "promoted":
            # The champion kept serving; the run fails so that nobody mistakes it for a release.
            raise GateFailedError([f"rollout rolled back: {'; '.join(result.reasons)}"])
        return live_app(cfg.app_name).url, result.outcome
