"""Operator actions on a running router: read what it serves, change traffic, take a version out,
roll a candidate out progressively. Each reads the live application's ``user_config`` from Serve (the
single source of truth for what is served), changes it, and redeploys in place with the app's own
replica settings, so nothing else about the application changes.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raymlops.errors import ConfigError, DeploymentError, ModelNotFoundError
from raymlops.registry.tags import DATA_VERSION_TAG

__all__ = [
    "LiveApp",
    "add_version",
    "api_key_headers",
    "check_app_env",
    "check_artifacts",
    "deploy_from_config",
    "live_app",
    "progressive_rollout",
    "served_versions",
    "set_traffic",
    "spec_from_registry",
    "undeploy_version",
    "update_live_app",
    "with_input_profile",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LiveApp:
    """A running router application as Serve reports it."""

    name: str
    url: str
    route_prefix: str
    status: str
    user_config: dict[str, Any]
    num_replicas: int
    replica_cpus: float
    replica_gpus: float
    host: str
    port: int
    tls: tuple[str, str] | None = None  # (certfile, keyfile) Serve's proxy was started with
    max_ongoing_requests: int | None = None  # the router's; None: the deployments' default

    def versions(self, model: str) -> dict[str, float]:
        """version -> weight of ``model``."""
        specs = self.user_config.get("models", {}).get(model)
        if specs is None:
            raise ModelNotFoundError(model, self.user_config.get("models", {}))
        return {s["version"]: float(s["weight"]) for s in specs}


def served_versions(app_name: str, model: str) -> dict[str, float] | None:
    """version -> weight of ``model`` in ``app_name``; ``{}`` when the app serves other models only,
    None when the app (or Serve) is not running."""
    try:
        app = live_app(app_name)
    except DeploymentError:
        return None
    return {s["version"]: float(s["weight"]) for s in app.user_config.get("models", {}).get(model, [])}


def live_app(app_name: str) -> LiveApp:
    """The router application ``app_name`` on the connected Ray cluster."""
    from ray import serve
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:  # nothing started Serve in this cluster
        raise DeploymentError(f"Serve is not running, so application {app_name!r} is not either.")
    details = client.get_serve_details()
    apps = details.get("applications", {})
    if app_name not in apps:
        raise DeploymentError(
            f"No Serve application {app_name!r} is running; running: {', '.join(sorted(apps)) or 'none'}."
        )
    app = apps[app_name]
    router = app["deployments"].get(f"router-{app_name}")
    if router is None:
        raise DeploymentError(f"Application {app_name!r} is not a raymlops router.")
    config = router["deployment_config"]
    options = config.get("ray_actor_options") or {}
    http = details.get("http_options") or {}
    host, port = http.get("host", "127.0.0.1"), int(http.get("port", 8000))
    prefix = app.get("route_prefix") or "/"
    del serve
    certfile, keyfile = http.get("ssl_certfile"), http.get("ssl_keyfile")
    tls = (str(certfile), str(keyfile)) if certfile and keyfile else None
    scheme = "https" if tls is not None else "http"
    return LiveApp(
        name=app_name,
        url=f"{scheme}://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}{prefix.rstrip('/')}",
        route_prefix=prefix,
        status=str(app.get("status")),
        user_config=copy.deepcopy(dict(config.get("user_config") or {})),
        num_replicas=int(config.get("num_replicas") or 1),
        replica_cpus=float(options.get("num_cpus", 0.25)),
        replica_gpus=float(options.get("num_gpus", 0.0) or 0.0),
        host=host,
        port=port,
        tls=tls,
        max_ongoing_requests=config.get("max_ongoing_requests"),
    )


def update_live_app(app: LiveApp, change: Callable[[dict[str, Any]], None], timeout_s: float = 120) -> str:
    """Apply ``change`` to a copy of the app's ``user_config``, validate it, redeploy in place."""
    from raymlops.serving.deploy import TLSSettings, deploy_user_config
    from raymlops.serving.spec import parse_user_config

    user_config = copy.deepcopy(app.user_config)
    change(user_config)
    parse_user_config(user_config)  # a bad table fails here, before anything reaches the replicas
    return deploy_user_config(
        user_config,
        app_name=app.name,
        host=app.host,
        port=app.port,
        route_prefix=app.route_prefix,
        num_replicas=app.num_replicas,
        replica_cpus=app.replica_cpus,
        replica_gpus=app.replica_gpus,
        timeout_s=timeout_s,
        max_ongoing_requests=app.max_ongoing_requests,
        # Serve is running, so these are only compared with its own: an update stays on HTTPS.
        tls=TLSSettings(*app.tls) if app.tls is not None else None,
    )


def set_traffic(app_name: str, model: str, weights: Mapping[str, float]) -> LiveApp:
    """Route ``model``'s traffic by ``{version: weight}``; versions not named keep their weight."""
    app = live_app(app_name)
    served = app.versions(model)
    unknown = sorted(set(weights) - set(served))
    if unknown:
        raise ConfigError(f"traffic.{unknown[0]}", f"is not a version {app_name!r} serves.", served)

    update_live_app(app, lambda config: _set_weights(config, model, weights))
    return live_app(app_name)


def undeploy_version(app_name: str, model: str, version: str, serve_cfg: Any = None) -> None:
    """Take ``model`` v``version`` out of ``app_name``; refused while it takes all of the traffic.

    ``serve_cfg`` is accepted for the CLI's signature; the app's own settings are reused.
    """
    from ray import serve

    app = live_app(app_name)
    served = app.versions(model)
    if version not in served:
        logger.info("%s v%s is not in %s: nothing to undeploy", model, version, app_name)
        return
    others = {v: w for v, w in served.items() if v != version}
    if not others and len(app.user_config["models"]) == 1:
        serve.delete(app_name)  # the app served only this version
        return
    if others and sum(others.values()) <= 0:
        raise DeploymentError(
            f"{model} v{version} takes all of {app_name}'s traffic: route it elsewhere first "
            f"(`python -m raymlops serve traffic {model} VERSION=100`)."
        )

    def change(config: dict[str, Any]) -> None:
        kept = [s for s in config["models"][model] if s["version"] != version]
        if kept:
            config["models"][model] = kept
        else:
            del config["models"][model]
        policy = config.get("policies", {}).get(model)
        if policy and (policy.get("shadow") or {}).get("version") == version:
            del policy["shadow"]

    update_live_app(app, change)


def spec_from_registry(
    registry: Any,
    name: str,
    ref: str,
    weight: float = 0.0,
    placement: str = "colocated",
    signer: Any = None,  # raymlops.security.integrity.Signer; None: digests checked, no signature
) -> Any:  # -> ModelSpec
    """The ModelSpec of a registered version: ``ref`` is a version number or ``@alias``.

    The spec carries model.onnx's recorded digest (its signature verified here, by ``signer``): every
    replica refuses other bytes.

    A version trained with feature views carries its feature lookup (the ``raymlops.feature_lookup`` tag);
    every version its task (the ``raymlops.task`` tag: what its graph outputs and its answers read).
    """
    from raymlops.features.online.lookup import FeatureLookup
    from raymlops.models.export import parse_input_columns
    from raymlops.registry.model_ref import parse_model_ref, resolve_model
    from raymlops.registry.tags import FEATURE_LOOKUP_TAG, INPUT_COLUMNS_TAG, TASK_TAG
    from raymlops.serving.spec import ModelSpec, task_description

    version = resolve_model(registry, parse_model_ref(f"{name}@{ref.removeprefix('@')}"))
    if version.lifecycle in ("rejected", "archived"):
        raise DeploymentError(f"{name} v{version.version} is {version.lifecycle}: it may not be served.")
    from raymlops.security.integrity import Signer, onnx_digest

    digest = onnx_digest(version.tags, signer or Signer(), f"{name} v{version.version}")
    spec = ModelSpec(
        name=name,
        version=version.version,
        onnx_path=str(registry.local_artifact(version, "model.onnx")),
        data_version=version.tags.get(DATA_VERSION_TAG, ""),
        input_columns=parse_input_columns(version.tags.get(INPUT_COLUMNS_TAG), f"{name} v{version.version}"),
        weight=weight,
        placement=placement,
        feature_lookup=FeatureLookup.from_dict(lookup)
        if (lookup := version.tags.get(FEATURE_LOOKUP_TAG))
        else None,
        digest=digest,
        source=(remote := _remote_source(registry, version.source))[0],
        tracking_uri=remote[1],
        # The registered task (absent: a version from before tasks, the legacy binary task).
        task=task_description(version.tags.get(TASK_TAG), f"{name} v{version.version}"),
    )
    return with_input_profile(spec)


def _remote_source(registry: Any, source: str) -> tuple[str, str]:
    """(``source``, ``tracking_uri``) for a version in a remote artifact store (replicas on other nodes
    download their own copy); ("", "") for a local one. The URI's credentials, if any, are left out."""
    from urllib.parse import urlsplit, urlunsplit

    from raymlops.registry.downloads import is_local_source

    if is_local_source(source):
        return "", ""
    parts = urlsplit(str(registry.tracking_uri))
    return source, urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def with_input_profile(spec: Any) -> Any:  # ModelSpec -> ModelSpec
    """``spec`` with the ``input_profile`` of the training profile registered beside its ONNX file
    (``profile.json``, a model file of the register stage), for out-of-distribution checks; unchanged
    when it has one already or no profile is there (then its requests are not checked)."""
    import dataclasses
    from pathlib import Path

    from raymlops.data.profile import Profile
    from raymlops.monitoring.version_info import PROFILE
    from raymlops.serving.ood import input_profile

    if spec.input_profile is not None:
        return spec
    path = Path(spec.onnx_path).parent / PROFILE
    if not path.is_file():
        logger.info(
            "no %s beside %s: v%s is served without OOD checks", PROFILE, spec.onnx_path, spec.version
        )
        return spec
    return dataclasses.replace(spec, input_profile=input_profile(Profile.load(path), spec.input_columns))


def wal_settings(serve_cfg: Any) -> dict[str, Any]:
    """The prediction log durability keys (``serve.prediction_log_*``) for ``PredictionLogSettings``."""
    return {
        "wal": bool(serve_cfg.prediction_log_wal),
        "fsync_interval_ms": float(serve_cfg.prediction_log_fsync_interval_ms),
        "fsync_rows": int(serve_cfg.prediction_log_fsync_rows),
    }


def online_store_settings(cfg: Any, specs: Any) -> dict[str, Any] | None:
    """``features.online_store`` of the job config when one of ``specs`` fetches features, else None."""
    from omegaconf import OmegaConf

    if not any(getattr(s, "feature_lookup", None) is not None for s in specs):
        return None
    return dict(OmegaConf.to_container(cfg.features.online_store, resolve=True))  # type: ignore[arg-type]


def add_version(
    app_name: str, spec: Any, online_store: Mapping[str, Any] | None = None
) -> LiveApp:  # spec: ModelSpec
    """Load ``spec`` into the running app (at its weight, often 0) without touching other versions.

    ``online_store``: the store a version with a feature lookup reads, for an app that has none yet.
    """
    from raymlops.serving.onnx_model import LoadedModel

    LoadedModel(spec, use_gpu=False)  # a broken graph fails here, not in the replicas
    app = live_app(app_name)

    def change(config: dict[str, Any]) -> None:
        versions = config.setdefault("models", {}).setdefault(spec.name, [])
        versions[:] = [s for s in versions if s["version"] != spec.version] + [spec.to_dict()]
        if spec.feature_lookup is not None and online_store is not None:
            config.setdefault("online_store", dict(online_store))

    update_live_app(app, change)
    return live_app(app_name)


def progressive_rollout(
    app_name: str,
    model: str,
    candidate: Any,  # ModelSpec of the candidate version
    policy: Any,  # RolloutPolicy
    governance: Any,  # Governance of the model's registry
    *,
    api_key: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Any:  # -> RolloutResult
    """Roll ``candidate`` out against the version serving most of ``model``'s traffic.

    The candidate becomes ``challenger`` and joins the app at 0%; ``run_rollout`` steps it up. Promoted:
    the ``champion`` alias moves to it (compare-and-set) and the old champion leaves the app. Rolled
    back: it leaves the app, loses ``challenger``, and the champion serves alone as before.
    """
    import httpx

    from raymlops.registry.governance import UNCHANGED
    from raymlops.serving.rollout import run_rollout

    served = live_app(app_name).versions(model)
    champion = max(served, key=lambda v: served[v])
    if candidate.version == champion:
        raise DeploymentError(f"{model} v{champion} already takes most of the traffic: nothing to roll out.")
    aliases = governance.aliases(model)
    if aliases.get("challenger") != candidate.version:
        governance.set_alias(
            model, "challenger", candidate.version, why="progressive rollout", action="rollout"
        )
    add_version(app_name, candidate)
    headers = {"x-api-key": api_key} if api_key else api_key_headers()
    client = httpx.Client(timeout=10.0, headers=headers)

    def apply(weights: Mapping[str, float]) -> None:
        update_live_app(live_app(app_name), lambda c: _set_weights(c, model, weights))

    def stats() -> Mapping[str, Any]:
        response = client.get(f"{live_app(app_name).url}/v1/models/{model}/stats")
        response.raise_for_status()
        return dict(response.json())

    def audit(action: str, why: str, details: dict[str, Any]) -> None:
        governance.audit(
            action, model, why, from_version=champion, to_version=candidate.version, details=details
        )

    try:
        result = run_rollout(
            model=model,
            champion=champion,
            candidate=candidate.version,
            policy=policy,
            apply=apply,
            stats=stats,
            audit=audit,
            progress=progress,
            task=getattr(candidate, "task_obj", None),  # what its predictions are, to compare
        )
    finally:
        client.close()
    app_label = f"rollout in {app_name}"
    if result.outcome == "promoted":
        expected = aliases.get("champion", UNCHANGED)
        governance.set_alias(model, "champion", candidate.version, why=app_label, expected=expected)
        if governance.aliases(model).get("challenger") == candidate.version:
            governance.clear_alias(model, "challenger", why="promoted to champion")
        undeploy_version(app_name, model, champion)
        governance.record_deployment(model, app_name, {candidate.version}, why=app_label)
    else:
        undeploy_version(app_name, model, candidate.version)
        if governance.aliases(model).get("challenger") == candidate.version:
            governance.clear_alias(model, "challenger", why=f"rolled back: {'; '.join(result.reasons)}")
        governance.record_deployment(model, app_name, {champion}, why=app_label)
    return result


def _set_weights(config: dict[str, Any], model: str, weights: Mapping[str, float]) -> None:
    for spec in config["models"][model]:
        if spec["version"] in weights:
            spec["weight"] = float(weights[spec["version"]])


def check_app_env(app_name: str, env: str) -> None:
    """Refuse to change a live app that another env deployed (its ``user_config`` records the env):
    an experiment (env=dev) pointed at the prod app by ``serve.app_name`` must not touch its traffic."""
    try:
        owner = live_app(app_name).user_config.get("env")
    except DeploymentError:
        return  # not running: deploying creates it for this env
    if owner is not None and owner != env:
        raise DeploymentError(
            f"Serve application {app_name!r} belongs to env={owner}; this is env={env} and may not "
            f"change it. Run with env={owner}, or deploy to this env's own app (serve.app_name)."
        )


def check_artifacts(cfg: Any, specs: list[Any]) -> None:
    """Before anything is deployed: each graph's bytes against its digest (a refusal is audited in
    ``security.audit_log`` and the live app is untouched), and, with encryption on, the KEKs put into
    the cluster's key-value store, where the replicas read them (never into the user_config)."""
    from raymlops.security.crypto import Keyring, publish_keyring, unpublish_keyring
    from raymlops.security.integrity import read_artifact

    keyring = Keyring.from_config(cfg)
    for spec in specs:
        read_artifact(
            spec.onnx_path,
            digest=spec.digest or None,
            what=f"{spec.name} v{spec.version}",
            keyring=keyring,
            audit_log=str(cfg.security.audit_log),
        )
    if keyring is not None:
        from raymlops.pipeline.ray_session import connect_ray

        connect_ray(cfg.ray)  # the cluster the deploy goes to (a bare ray.init() could join another)
        publish_keyring(keyring)
    else:
        unpublish_keyring()


def deploy_from_config(cfg: Any, specs: list[Any]) -> str:
    """``deploy()`` with every setting of the job's ``serve`` group (auth, prediction log included)."""
    from omegaconf import OmegaConf

    from raymlops.security.keys import router_auth
    from raymlops.serving.deploy import deploy

    serve_cfg = cfg.serve
    check_app_env(serve_cfg.app_name, str(cfg.env.name))
    if serve_cfg.ood.enabled:  # each version's training profile, reduced to bounds here on the driver
        specs = [with_input_profile(s) for s in specs]
    check_artifacts(cfg, specs)
    log: dict[str, Any] | None = None
    if serve_cfg.prediction_log:
        from raymlops.security.pii import PIIPolicy

        # PII columns are hashed (or dropped) by the router before a row is logged; the key goes to
        # the replicas through the cluster's key-value store, never through the user_config.
        pii = PIIPolicy.from_config(cfg).router_settings()
        log = {"root": str(cfg.monitor.log_root), **({"pii": pii} if pii else {})}
        log.update(wal_settings(serve_cfg))
    return deploy(
        specs,
        app_name=serve_cfg.app_name,
        host=serve_cfg.host,
        port=serve_cfg.port,
        route_prefix=serve_cfg.route_prefix,
        num_replicas=serve_cfg.num_replicas,
        replica_cpus=serve_cfg.replica_cpus,
        use_gpu=serve_cfg.use_gpu,
        max_rows_per_request=serve_cfg.max_rows_per_request,
        auth=router_auth(serve_cfg.auth.enabled, serve_cfg.auth.keys_file, cfg.security.audit_log),
        prediction_log=log,
        model_batch_size=serve_cfg.model_batch_size,
        model_batch_wait_us=serve_cfg.model_batch_wait_us,
        env=str(cfg.env.name),
        online_store=online_store_settings(cfg, specs),
        tls=OmegaConf.to_container(serve_cfg.tls, resolve=True),  # type: ignore[arg-type]
        max_body_bytes=serve_cfg.max_body_bytes,
        max_ongoing_requests=serve_cfg.max_ongoing_requests,
        rate_limit=OmegaConf.to_container(serve_cfg.rate_limit, resolve=True),  # type: ignore[arg-type]
        ood=OmegaConf.to_container(serve_cfg.ood, resolve=True),  # type: ignore[arg-type]
    )


def api_key_headers() -> dict[str, str]:
    """The operator's API key (``RAYMLOPS_API_KEY``) as a request header, when one is set."""
    import os

    key = os.environ.get("RAYMLOPS_API_KEY")
    return {"x-api-key": key} if key else {}
