"""Deploy the router as a Serve application and wait until it answers over HTTP."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict

from raymlops.errors import ConfigError, DeploymentError
from raymlops.serving.policy import RoutePolicy
from raymlops.serving.spec import ModelSpec, PredictionLogSettings, build_user_config
from raymlops.settings_model import validate_settings

__all__ = ["TLSSettings", "deploy", "deploy_user_config", "sample_requests"]

logger = logging.getLogger(__name__)

_POLL_S = 0.25
# The files whose code runs inside a router replica; their hash is the deployment's code version.
_REPLICA_CODE = (
    "serving/app.py",
    "serving/app_logging.py",
    "serving/asgi.py",
    "serving/auth.py",
    "serving/explainers.py",
    "serving/metrics.py",
    "serving/middleware_settings.py",
    "serving/model_inputs.py",
    "serving/model_server.py",
    "serving/onnx_model.py",
    "serving/ood.py",
    "serving/openapi_docs.py",
    "serving/policy.py",
    "serving/protocols/__init__.py",
    "serving/protocols/base.py",
    "serving/protocols/oip_v2.py",
    "serving/protocols/registry.py",
    "serving/protocols/v1.py",
    "serving/rate_limit.py",
    "serving/refusals.py",
    "serving/request_inputs.py",
    "serving/routing_table.py",
    "serving/scoring.py",
    "serving/spec.py",
    "security/__init__.py",
    "security/keys.py",
    "security/names.py",
    "security/role_ranks.py",
    "security/roles.py",
    "models/export.py",
    "features/preprocess.py",
    "features/online/__init__.py",
    "features/online/base.py",
    "features/online/lookup.py",
    "features/online/sqlite_store.py",
    "features/online/redis_store.py",
    "serving/feature_lookup.py",
    "errors.py",
    "settings_model.py",
    "monitoring/__init__.py",
    "monitoring/parquet_log.py",
    "monitoring/prediction_log.py",
    "evaluation/explain.py",
    "evaluation/explanation.py",
    "evaluation/raw_codec.py",
)


class _TLSShape(BaseModel):
    """``serve.tls``'s keys; the files themselves are checked by ``TLSSettings.from_dict``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    unknown_problem: ClassVar[str] = "is not a TLS setting."

    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password_env: str | None = None


@dataclass(frozen=True)
class TLSSettings:
    """``serve.tls``: the certificate (chain) and private key the Serve HTTP proxy speaks HTTPS with.

    Fixed when Serve starts, for every application of the cluster (Ray Serve's ``HTTPOptions``). The
    key's password, if any, is read from the environment variable ``keyfile_password_env`` on the
    driver; Serve keeps it in its HTTP options, which ``serve status`` and the dashboard show, so
    prefer an unencrypted key file of mode 0600 readable by the Ray user only.
    """

    certfile: str
    keyfile: str
    keyfile_password_env: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | TLSSettings | None) -> TLSSettings | None:
        """From ``{"certfile", "keyfile", "keyfile_password_env"}``; None (or both paths unset): no TLS.

        Raises:
            ConfigError: One of certfile/keyfile without the other, a file that cannot be read, or a
                password variable that is not set.
        """
        if data is None or isinstance(data, TLSSettings):
            return data
        shape = validate_settings(_TLSShape, data, "serve.tls")
        certfile, keyfile, password_env = shape.certfile, shape.keyfile, shape.keyfile_password_env
        if not certfile and not keyfile:
            return None
        if not certfile or not keyfile:
            missing, given = ("certfile", "keyfile") if not certfile else ("keyfile", "certfile")
            raise ConfigError(
                f"serve.tls.{missing}",
                f"is not set but serve.tls.{given} is: HTTPS needs both the certificate and its private "
                "key (PEM files); set both, or neither for plain HTTP.",
            )
        for key, path in (("certfile", certfile), ("keyfile", keyfile)):
            try:
                with open(path, "rb") as handle:
                    head = handle.read(64)
            except OSError as exc:
                raise ConfigError(
                    f"serve.tls.{key}",
                    f"{path!r} cannot be read ({exc.strerror or exc}); give a readable PEM file.",
                ) from None
            if b"-----BEGIN" not in head:
                raise ConfigError(f"serve.tls.{key}", f"{path!r} is not a PEM file (no -----BEGIN line).")
        if password_env and password_env not in os.environ:
            raise ConfigError(
                "serve.tls.keyfile_password_env",
                f"names the environment variable {password_env!r}, which is not set: export it with the "
                "key's password, or unset keyfile_password_env for an unencrypted key.",
            )
        return cls(certfile, keyfile, password_env or None)

    def http_options(self) -> dict[str, str]:
        """The ``ssl_*`` fields of Serve's ``HTTPOptions``."""
        options = {"ssl_certfile": self.certfile, "ssl_keyfile": self.keyfile}
        if self.keyfile_password_env:
            options["ssl_keyfile_password"] = os.environ[self.keyfile_password_env]
        return options


def _code_version() -> str:
    """A deployment version that changes only when the replica's code does.

    ``serve.run`` gives an unversioned deployment a random version on every call, which restarts every
    replica even when only ``user_config`` changed (measured: new pid, ~6 s). With a stable version
    such a call reconfigures the live replicas in place (same pid, ~1 s).
    """
    import raymlops

    root = Path(raymlops.__file__).parent
    digest = hashlib.sha256(raymlops.__version__.encode())
    for relative in _REPLICA_CODE:
        digest.update((root / relative).read_bytes())
    return digest.hexdigest()[:16]


def deploy(
    models: Sequence[ModelSpec],
    *,
    app_name: str,
    host: str,
    port: int,
    route_prefix: str = "/",
    num_replicas: int = 1,
    replica_cpus: float = 0.25,
    use_gpu: bool = False,
    max_rows_per_request: int = 10_000,
    timeout_s: float = 120,
    replica_gpus: float = 1.0,
    check_models: bool = True,
    policies: Mapping[str, RoutePolicy] | None = None,
    max_body_bytes: int | None = None,
    shadow_max_in_flight: int | None = None,
    stats_window: int | None = None,
    auth: Mapping[str, Any] | None = None,
    max_explain_rows: int | None = None,
    prediction_log: PredictionLogSettings | Mapping[str, Any] | None = None,
    model_batch_size: int | None = None,
    model_batch_wait_us: int | None = None,
    env: str | None = None,
    online_store: Mapping[str, Any] | None = None,
    tls: Mapping[str, Any] | TLSSettings | None = None,
    rate_limit: Mapping[str, Any] | None = None,
    ood: Mapping[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
) -> str:
    """Deploy (or update in place) the router serving ``models`` and wait until it is ready.

    Calling it again with the same app name and replica settings but other specs (weights, versions)
    reconfigures the running replicas without restarting them.

    Args:
        models: The versions to serve; several with one name are split by ``weight``.
        app_name: Serve application name; also the deployment name (``router-<app_name>``).
        host: Interface the Serve HTTP proxy binds (cluster-wide; fixed by the first ``serve.start``).
        port: Port of the Serve HTTP proxy (same caveat).
        route_prefix: URL prefix of the application.
        num_replicas: Router replicas.
        replica_cpus: CPUs each replica reserves (Serve's default of 1 leaves replicas pending on small
            machines).
        use_gpu: Run onnxruntime with the CUDA provider; each replica then reserves ``replica_gpus``.
        max_rows_per_request: Larger requests are refused with 422.
        timeout_s: How long to wait for the application to answer ``/v2/health/ready``.
        replica_gpus: GPUs each replica reserves when ``use_gpu`` (fractions share a device).
        policies: Per model name, sticky assignment and shadowing (``RoutePolicy``).
        max_body_bytes, shadow_max_in_flight, stats_window, max_explain_rows, model_batch_size,
            model_batch_wait_us: Router settings (``build_user_config``); None keeps the default.
        prediction_log: ``{"root": PATH_OR_URI, "flush_rows": 1000, "flush_interval_s": 2.0}``
            (``PredictionLogSettings``): log every scored row under ``root`` and accept
            ``/v1/feedback``; None: no log (a live log is written out and closed).
        env: The env (dev/staging/prod) deploying; recorded in ``user_config`` so that another env
            cannot change this app (``operations.check_app_env``).
        online_store: ``{"kind": "sqlite"|"redis", "path"|"url": ..., ...}`` (``OnlineStoreSettings``):
            where versions with a ``feature_lookup`` fetch their features; needed only by those.
        auth: ``{"enabled": bool, "keys": KeyStore.public_table()}`` (``auth.router_auth`` builds it
            from the ``serve.auth`` config); None: no API keys needed. A new table (a revoked key)
            applies in place, like a routing change.
        tls: ``{"certfile", "keyfile", "keyfile_password_env"}`` (``TLSSettings``): Serve's HTTP proxy
            speaks HTTPS only. Like host and port, fixed by the first ``serve.start`` of the cluster:
            deploying with TLS onto a Serve started without it (or the reverse) is refused.
        rate_limit: ``{"requests_per_s": R, "burst": N}`` per client (API key id, else address) and
            replica; beyond it 429 with ``Retry-After``. None or a rate of 0: no limit.
        ood: ``{"enabled", "action": "flag"|"reject", "range_margin"}``: how versions with an
            ``input_profile`` treat rows outside their training profile (``raymlops.serving.ood``).
        max_ongoing_requests: Requests each router and model replica takes at once (Serve's own
            default is 5, which halves throughput at 16 in flight: see ``model_server.MAX_ONGOING_REQUESTS``);
            None: ``MAX_ONGOING_REQUESTS`` (64). Model replicas take at least ``model_batch_size``.
        check_models: Load every ONNX file here first (on CPU). A replica whose reconfigure fails is
            replaced, and in Ray 2.60 a failed in-place update leaves no replica serving; a broken
            model must not get that far. Turn off only where the driver cannot read the paths.

    Returns:
        The base URL, ``http(s)://host:port`` + route prefix, without a trailing slash.

    Raises:
        ConfigError: The specs do not form a valid routing table, or the TLS files are unusable.
        DeploymentError: Serve refused the application, it failed, or it was not ready in time.
    """
    settings: dict[str, Any] = {
        "max_body_bytes": max_body_bytes,
        "shadow_max_in_flight": shadow_max_in_flight,
        "stats_window": stats_window,
        "max_explain_rows": max_explain_rows,
        "model_batch_size": model_batch_size,
        "model_batch_wait_us": model_batch_wait_us,
    }
    user_config = build_user_config(
        models,
        policies=policies,
        use_gpu=use_gpu,
        max_rows_per_request=max_rows_per_request,
        auth=auth,
        prediction_log=prediction_log,
        env=env,
        online_store=online_store,
        rate_limit=rate_limit,
        ood=ood,
        **{k: v for k, v in settings.items() if v is not None},
    )
    tls_settings = TLSSettings.from_dict(tls)
    if check_models:
        from raymlops.serving.onnx_model import LoadedModel
        from raymlops.serving.spec import node_local

        for spec in models:  # as a replica loads it (its own copy of a remote version included)
            LoadedModel(node_local(spec), use_gpu=False)  # raises DeploymentError naming the problem
    return deploy_user_config(
        user_config,
        app_name=app_name,
        host=host,
        port=port,
        route_prefix=route_prefix,
        num_replicas=num_replicas,
        replica_cpus=replica_cpus,
        replica_gpus=replica_gpus if use_gpu else 0.0,
        timeout_s=timeout_s,
        tls=tls_settings,
        max_ongoing_requests=max_ongoing_requests,
    )


def deploy_user_config(
    user_config: Mapping[str, Any],
    *,
    app_name: str,
    host: str,
    port: int,
    route_prefix: str = "/",
    num_replicas: int = 1,
    replica_cpus: float = 0.25,
    replica_gpus: float = 0.0,
    timeout_s: float = 120,
    tls: TLSSettings | None = None,
    max_ongoing_requests: int | None = None,
) -> str:
    """Deploy the router with a ready ``user_config`` (``build_user_config``'s output, or a live app's
    config changed by ``raymlops.serving.operations``) and wait until it answers; returns the URL.

    Versions with ``placement: deployment`` become ``ModelServer`` deployments of the same app, bound
    into the router; a version dropped from ``user_config`` has its deployment removed with it.
    ``tls`` applies only if this call starts Serve; a running Serve must already match it.
    """
    from ray import serve

    from raymlops.serving.app import LOGGING_CONFIG, Router
    from raymlops.serving.model_server import MAX_ONGOING_REQUESTS, ModelServer, deployment_name, remote_specs

    if not route_prefix.startswith("/"):
        raise DeploymentError(f"route_prefix must start with '/', got {route_prefix!r}.")
    ongoing = MAX_ONGOING_REQUESTS if max_ongoing_requests is None else int(max_ongoing_requests)
    if ongoing < 1:
        raise ConfigError(
            "serve.max_ongoing_requests",
            f"is {ongoing}: a replica must take at least 1 request at once; leave it unset for "
            f"{MAX_ONGOING_REQUESTS}.",
        )
    actor_options: dict[str, Any] = {"num_cpus": replica_cpus}
    if replica_gpus > 0:
        # Without a GPU reservation Ray hides every device from the actor and CUDA silently falls back.
        actor_options["num_gpus"] = replica_gpus
    try:
        http_options: dict[str, Any] = {"host": host, "port": port}
        if tls is not None:
            http_options.update(tls.http_options())
        serve.start(http_options=http_options, logging_config=LOGGING_CONFIG)
        _check_http_port(port, tls)
        model_servers = [
            _versioned(
                cast(serve.Deployment, ModelServer),
                name=deployment_name(spec),
                num_replicas=num_replicas,
                ray_actor_options=actor_options,
                # A batch can only fill with the requests a replica takes at once.
                max_ongoing_requests=max(ongoing, int(user_config.get("model_batch_size", 32))),
                user_config={
                    "spec": spec.to_dict(),
                    "use_gpu": bool(user_config.get("use_gpu", False)),
                    "max_batch_size": user_config.get("model_batch_size", 32),
                    "batch_wait_us": user_config.get("model_batch_wait_us", 1000),
                },
            ).bind()
            for spec in remote_specs(user_config)
        ]
        application = _versioned(
            # The decorators turn the class into a Deployment; mypy only sees the class.
            cast(serve.Deployment, Router),
            name=f"router-{app_name}",
            num_replicas=num_replicas,
            ray_actor_options=actor_options,
            user_config=user_config,
            max_ongoing_requests=ongoing,
        ).bind(*model_servers)
        # serve.run waits for RUNNING without any timeout (a replica that cannot be scheduled waits
        # forever); run_many without that wait lets us bound it and report the app status instead.
        serve.run_many(
            [
                serve.RunTarget(
                    target=application,
                    name=app_name,
                    route_prefix=route_prefix,
                    logging_config=LOGGING_CONFIG,
                )
            ],
            wait_for_applications_running=False,
        )
    except DeploymentError:
        raise
    except Exception as exc:
        raise DeploymentError(f"Serve refused application {app_name!r}: {exc}") from exc
    scheme = "https" if tls is not None else "http"
    url = f"{scheme}://{host}:{port}{route_prefix.rstrip('/')}"
    _wait_ready(app_name, url, timeout_s)
    logger.info(
        "deployed app=%s url=%s models=%s",
        app_name,
        url,
        {name: [s["version"] for s in specs] for name, specs in user_config["models"].items()},
    )
    return url


def _versioned(deployment: Any, **options: Any) -> Any:
    """``deployment.options(**options)`` pinned to ``_code_version()``.

    Ray 2.60 refuses ``version=`` in the public ``Deployment.options`` ("Serve manages deployment
    versions internally") yet still versions ``serve.run`` deployments randomly, so the only way to a
    lightweight ``user_config`` update from Python is its ``_internal`` flag. Should that flag go away,
    deploying still works; routing changes then restart the replicas.
    """
    try:
        return deployment.options(version=_code_version(), _internal=True, **options)
    except (TypeError, ValueError) as exc:
        logger.warning("serve version pinning unavailable, config changes restart replicas: %s", exc)
        return deployment.options(**options)


def _check_http_port(port: int, tls: TLSSettings | None = None) -> None:
    """Serve keeps the HTTP options of its first start and ignores later ones; say so plainly.

    TLS above all: a deploy that asked for HTTPS must never end up serving plain HTTP because an
    earlier ``serve.start`` had no certificate.
    """
    try:
        from ray.serve.context import _get_global_client

        client = _get_global_client()
        if client is None:
            return
        running = client.http_config.port
        running_cert = getattr(client.http_config, "ssl_certfile", None)
    except Exception:  # a private API: when it moves, fall back to the readiness timeout
        return
    if running != port:
        raise DeploymentError(
            f"Serve is already running with its HTTP proxy on port {running}, not {port}; "
            f"deploy with port={running} or call serve.shutdown() first."
        )
    wanted_cert = tls.certfile if tls is not None else None
    if running_cert != wanted_cert:
        now = f"HTTPS with {running_cert!r}" if running_cert else "plain HTTP"
        asked = f"HTTPS with {wanted_cert!r}" if wanted_cert else "plain HTTP"
        raise DeploymentError(
            f"Serve is already running with {now}, but this deploy asks for {asked}; HTTP options are "
            "fixed when Serve starts: call serve.shutdown() (or `serve shutdown`) first, or deploy "
            "with the running TLS settings."
        )


def _app_status(app_name: str) -> tuple[str, str]:
    from ray import serve

    application = serve.status().applications.get(app_name)
    if application is None:
        return "NOT_STARTED", "the application does not exist"
    details = "; ".join(
        f"{name}: {d.status} {d.message}".strip() for name, d in application.deployments.items()
    )
    return str(application.status), f"{application.message} {details}".strip()


def _wait_ready(app_name: str, url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    status, message = "UNKNOWN", ""
    # An HTTPS probe does not verify the certificate: it asks our own proxy whether the app is up,
    # sends nothing secret, and the URL's host (127.0.0.1 for 0.0.0.0) need not be in the certificate.
    with httpx.Client(timeout=5.0, verify=False) as client:
        while time.monotonic() < deadline:
            status, message = _app_status(app_name)
            if status.endswith("DEPLOY_FAILED"):
                raise DeploymentError(f"Application {app_name!r} failed to deploy: {message}")
            # RUNNING first: during an update the old replicas already answer ready.
            if status.endswith("RUNNING"):
                try:
                    if client.get(f"{url}/v2/health/ready").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass  # the proxy is still starting
            time.sleep(_POLL_S)
    raise DeploymentError(
        f"Application {app_name!r} was not ready at {url}/v2/health/ready within "
        f"{timeout_s:.0f} s; status {status}: {message}"
    )


def sample_requests(
    url: str,
    name: str,
    records: Sequence[dict[str, Any]],
    *,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """POST each record to ``{url}/v1/models/{name}/predict`` over real HTTP.

    Returns:
        One dict per record: ``record``, ``status_code``, ``body`` (the parsed JSON answer) and
        ``headers`` (``model-name``, ``model-version``, ``data-version``, ``prediction-id``).

    Raises:
        DeploymentError: An answer was not 200; the message carries the server's error.
    """
    import httpx

    answers = []
    with httpx.Client(timeout=timeout_s, headers=dict(headers or {})) as client:
        for record in records:
            response = client.post(f"{url}/v1/models/{name}/predict", json={"records": [record]})
            if response.status_code != 200:
                # Serve's own errors (503 while a deployment is down) are plain text, ours JSON.
                raise DeploymentError(
                    f"Sample request to {url} for model {name!r} answered "
                    f"{response.status_code}: {response.text[:500]}"
                )
            body = response.json()
            answered = {
                key: response.headers.get(key)
                for key in ("model-name", "model-version", "data-version", "prediction-id")
            }
            answers.append(
                {
                    "record": dict(record),
                    "status_code": response.status_code,
                    "body": body,
                    "headers": answered,
                }
            )
    return answers
