"""The serving router as a declarative Serve application, for a RayService's ``serveConfigV2``.

    applications:
    - name: raymlops-prod
      import_path: raymlops.deploy.serve_app:app
      args: {overrides: [+experiment=quickstart, env=prod], model: flights-delay-prod@champion}

``python -m raymlops serve run`` deploys the same router imperatively on one machine; here Serve builds
it on the cluster from the registry on the shared volume (``RAYMLOPS_HOME``), with every setting of the
job's ``serve`` group (auth, prediction log, TLS aside: on Kubernetes the Service or Ingress ends TLS).
The version is resolved when the application is built: after a new champion, change ``model`` (or any
arg) in the RayService and KubeRay redeploys the application in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raymlops.errors import ConfigError

__all__ = ["ARGS", "app", "parse_args"]

ARGS = ("overrides", "model")


def parse_args(args: Mapping[str, Any]) -> tuple[list[str], str | None]:
    """``(overrides, model)`` from the application's ``args``; unknown keys or wrong types name the key."""
    unknown = sorted(str(k) for k in args if k not in ARGS)
    if unknown:
        raise ConfigError(f"serveConfigV2 args.{unknown[0]}", "is not an argument of the router app.", ARGS)
    overrides = args.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(
            "serveConfigV2 args.overrides",
            f"must be a list of Hydra overrides (strings), got {overrides!r}.",
        )
    model = args.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise ConfigError("serveConfigV2 args.model", f"must be NAME[@ALIAS|@VERSION], got {model!r}.")
    return list(overrides), model


def app(args: Mapping[str, Any]) -> Any:  # -> serve.Application
    """Serve's application builder: the router serving ``model`` (default: the env's champion)."""
    from omegaconf import OmegaConf
    from ray import serve

    from raymlops.config import compose
    from raymlops.registry.mlflow_registry import ModelRegistry
    from raymlops.registry.model_ref import parse_model_ref
    from raymlops.security.keys import router_auth
    from raymlops.security.pii import PIIPolicy
    from raymlops.serving.app import Router
    from raymlops.serving.model_server import ModelServer, deployment_name, remote_specs
    from raymlops.serving.operations import online_store_settings, spec_from_registry, wal_settings
    from raymlops.serving.spec import build_user_config

    overrides, model = parse_args(args)
    cfg = compose(overrides)
    serve_cfg = cfg.serve
    ref = parse_model_ref(model or f"@{cfg.retrain.alias}", str(cfg.registry.model_name))
    registry = ModelRegistry.from_config(cfg.registry)
    spec = spec_from_registry(
        registry,
        ref.name,
        ref.version if ref.version is not None else f"@{ref.alias}",
        weight=1.0,
        placement=str(serve_cfg.placement.value),
    )
    log: dict[str, Any] | None = None
    if serve_cfg.prediction_log:
        pii = PIIPolicy.from_config(cfg).router_settings()
        log = {"root": str(cfg.monitor.log_root), **({"pii": pii} if pii else {})}
        log.update(wal_settings(serve_cfg))
    user_config = build_user_config(
        [spec],
        use_gpu=bool(serve_cfg.use_gpu),
        max_rows_per_request=int(serve_cfg.max_rows_per_request),
        max_body_bytes=int(serve_cfg.max_body_bytes),
        auth=router_auth(serve_cfg.auth.enabled, serve_cfg.auth.keys_file, cfg.security.audit_log),
        prediction_log=log,
        model_batch_size=int(serve_cfg.model_batch_size),
        model_batch_wait_us=int(serve_cfg.model_batch_wait_us),
        env=str(cfg.env.name),
        online_store=online_store_settings(cfg, [spec]),
        rate_limit=OmegaConf.to_container(serve_cfg.rate_limit, resolve=True),  # type: ignore[arg-type]
        ood=OmegaConf.to_container(serve_cfg.ood, resolve=True),  # type: ignore[arg-type]
    )
    actor_options: dict[str, Any] = {"num_cpus": float(serve_cfg.replica_cpus)}
    if serve_cfg.use_gpu:
        actor_options["num_gpus"] = 1.0  # without a reservation Ray hides the devices from the replica
    ongoing = int(serve_cfg.max_ongoing_requests)
    servers = [
        ModelServer.options(  # type: ignore[attr-defined]
            name=deployment_name(s),
            num_replicas=int(serve_cfg.num_replicas),
            ray_actor_options=actor_options,
            # A batch can only fill with the requests a replica takes at once.
            max_ongoing_requests=max(ongoing, int(serve_cfg.model_batch_size)),
            user_config={
                "spec": s.to_dict(),
                "use_gpu": bool(serve_cfg.use_gpu),
                "max_batch_size": int(serve_cfg.model_batch_size),
                "batch_wait_us": int(serve_cfg.model_batch_wait_us),
            },
        ).bind()
        for s in remote_specs(user_config)
    ]
    router: serve.Deployment = Router.options(  # type: ignore[attr-defined]
        name=f"router-{serve_cfg.app_name}",
        num_replicas=int(serve_cfg.num_replicas),
        ray_actor_options=actor_options,
        user_config=user_config,
        max_ongoing_requests=ongoing,
    )
    return router.bind(*servers)
