"""The serving application: a FastAPI ingress inside one Ray Serve deployment, ``Router`` (DESIGN §4).

A live version's ONNX session lives inside each router replica (``placement: colocated``, the
default): a ``DeploymentHandle`` hop to a separate model deployment costs about 3.8 ms p50 here, more
than a small model itself. A version too large to copy into every router replica runs in its own
``ModelServer`` deployment behind a handle (``placement: deployment``, ``model_server``). The routing table
and policy come from ``user_config`` (shape: ``spec.build_user_config``): ``deploy()`` with a new
table calls ``reconfigure`` on the running replicas instead of restarting them (it pins the
deployment's code version; see ``deploy._versioned``).

This module keeps the routes and ``reconfigure``; the work lives in rooms of its own: the protocols
(``protocols``: how a body is read and an answer written, and each route's lowest role), the scoring
path shared by every protocol and attempt (``scoring``), a request's inputs and their checks
(``request_inputs``), the explainers (``explainers``), the OpenAPI parts (``openapi_docs``), and the
settings the middlewares read (``middleware_settings``). Endpoints:

- ``POST /v1/models/{name}/predict``; ``GET /v1/models``; ``GET /v1/models/{name}/stats``.
- ``POST /v1/models/{name}/explain``: SHAP values per row from the version's packaged explainer.
- ``POST /v1/feedback``: true outcomes for prediction ids, logged beside the prediction log.
- Open Inference Protocol v2: ``GET /v2``, ``GET /v2/health/live|ready``, ``GET /v2/models/{name}``
  (and ``/ready``, ``/versions/{version}``, ``/versions/{version}/ready``),
  ``POST /v2/models/{name}/infer`` and ``POST /v2/models/{name}/versions/{version}/infer``.

Every scoring answer carries ``model-name``, ``model-version``, ``data-version`` and ``prediction-id``
headers; errors are ``{"error": "..."}`` with a 4xx status for anything the client sent wrong.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and once ``serve.ingress`` has rewrapped the methods, string annotations no longer resolve
# (``request: Request`` silently turns into a required query parameter).

import asyncio
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

import raymlops
from raymlops.errors import ModelNotFoundError, OnlineStoreError, RequestError
from raymlops.monitoring.prediction_log import parse_feedback
from raymlops.serving.app_logging import LOGGING_CONFIG
from raymlops.serving.auth import ApiKeyMiddleware
from raymlops.serving.explainers import ExplainerCache
from raymlops.serving.metrics import ServingMetrics
from raymlops.serving.middleware_settings import MiddlewareSettings
from raymlops.serving.model_server import MAX_ONGOING_REQUESTS, RemoteModel, deployment_name
from raymlops.serving.onnx_model import LoadedModel
from raymlops.serving.ood import OODCheck
from raymlops.serving.openapi_docs import ERROR_RESPONSES, EXPLAIN_DOC, FEEDBACK_DOC, score_doc
from raymlops.serving.policy import choose_version
from raymlops.serving.protocols import oip_v2
from raymlops.serving.protocols.oip_v2 import OipV2
from raymlops.serving.protocols.v1 import V1
from raymlops.serving.rate_limit import RateLimitMiddleware
from raymlops.serving.refusals import audit_refusal
from raymlops.serving.request_inputs import RequestInputs, check_explain_rows, read_body
from raymlops.serving.routing_table import Routes
from raymlops.serving.scoring import Scorer, version_headers
from raymlops.serving.spec import ModelSpec, node_local, parse_user_config

__all__ = ["LOGGING_CONFIG", "Router", "app", "choose_version"]

logger = logging.getLogger(__name__)

_V1, _V2 = V1(), OipV2()  # stateless: one instance of each serves every request

# tritonclient posts its JSON (or JSON + binary tensors) with no Content-Type header: every scoring
# endpoint reads the raw body itself instead of letting FastAPI parse it.
app = FastAPI(title="raymlops serving", version="1", responses=ERROR_RESPONSES)

# What the middlewares read per request; the Router updates it on every reconfigure.
MIDDLEWARE = MiddlewareSettings()
# Starlette runs the middleware added last first: auth, then the rate limit by the verified key id.
app.add_middleware(RateLimitMiddleware, settings=MIDDLEWARE.rate_limit, on_limited=MIDDLEWARE.rate_limited)
app.add_middleware(ApiKeyMiddleware, table=MIDDLEWARE.auth)  # roles: protocols.registry.ROUTE_ROLES


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


@app.exception_handler(RequestError)
async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    return _error(exc.status, exc.message)


@app.exception_handler(ModelNotFoundError)
async def _model_not_found(_: Request, exc: ModelNotFoundError) -> JSONResponse:
    return _error(404, str(exc))


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', '')}" for e in exc.errors())
    return _error(422, f"invalid request: {problems}")


@app.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    # Unknown routes (404) and wrong methods (405) get the same {"error": ...} body as our own errors.
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    logging_config=LOGGING_CONFIG,
    max_ongoing_requests=MAX_ONGOING_REQUESTS,  # Serve's 5 halves throughput at 16 in flight
)
@serve.ingress(app)
class Router:
    """Serves every live version of every model name; routing policy from ``user_config``."""

    def __init__(self, *model_servers: Any) -> None:
        # Handles of the app's ModelServer deployments (``placement: deployment``), bound by deploy();
        # a version added later by a routing change alone is looked up by name (``_handle``).
        self._handles = {h.deployment_name: h for h in model_servers}
        self._routes = Routes()
        self._generation = 0  # counts reconfigures: proves a config change reached a live replica
        self._metrics = ServingMetrics()  # Ray registers each metric once per process
        self._metrics.start_gauge_refresh()
        self._inputs = RequestInputs(self._metrics)
        self._scorer = Scorer(self._metrics, self._inputs, self._routes.config.stats_window)
        self._explainers = ExplainerCache()
        MIDDLEWARE.on_rate_limited(self._on_rate_limited)

    def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        """Load the versions of a new routing table, reusing sessions already loaded, then swap."""
        config = parse_user_config(user_config)
        # A version downloaded by the deploying process from a remote store: this node's own copy.
        local = {name: tuple(node_local(s) for s in specs) for name, specs in config.models.items()}
        config = dataclasses.replace(config, models=local)
        self._inputs.reconfigure(config)  # before the swap: the new table's lookups need the store
        old = self._routes
        models: dict[tuple[str, str], LoadedModel | RemoteModel] = {}
        for name, specs in config.models.items():
            for spec in specs:
                previous = old.models.get((name, spec.version))
                if previous is not None and previous.can_reuse_for(spec, use_gpu=config.use_gpu):
                    models[(name, spec.version)] = previous.with_spec(spec)
                elif spec.placement == "deployment":
                    handle = self._handle(spec)
                    models[(name, spec.version)] = RemoteModel(spec, handle, use_gpu=config.use_gpu)
                else:
                    models[(name, spec.version)] = LoadedModel(spec, use_gpu=config.use_gpu)
        ood = {}
        if config.ood.enabled:
            for name, specs in config.models.items():
                for spec in specs:
                    if spec.input_profile:
                        ood[(name, spec.version)] = OODCheck(spec.input_profile, config.ood.range_margin)
        self._scorer.stats.retain(models, config.stats_window)
        self._routes = Routes(config, models, ood)
        MIDDLEWARE.update(config.auth, config.rate_limit)
        self._generation += 1
        weights = {}
        for name, specs in config.models.items():
            total = sum(s.weight for s in specs)
            weights.update({(name, s.version): s.weight / total for s in specs})
        self._metrics.routing_weights(weights)
        self._scorer.reconfigure_log(config)
        self._explainers.prepare(config)
        logger.info(
            "router reconfigured generation=%d models=%s policies=%s",
            self._generation,
            {name: [(s.version, s.weight) for s in specs] for name, specs in config.models.items()},
            {name: p.to_dict() for name, p in config.policies.items()},
        )

    def _handle(self, spec: ModelSpec) -> Any:
        name = deployment_name(spec)
        handle = self._handles.get(name)
        if handle is None:
            handle = serve.get_deployment_handle(name, serve.get_replica_context().app_name)
            self._handles[name] = handle
        return handle

    def _on_rate_limited(self, label: str, key: str, retry_after_s: int, first: bool) -> None:
        """A 429 of the rate limit: counted; the first of a client's run of refusals is audited."""
        self._metrics.rate_limited(label)
        if first:
            logger.info("rate limited client=%s retry_after_s=%d", label, retry_after_s)
            why = f"429 rate limit exceeded; retry after {retry_after_s} s"
            details = {"key_id": label} if label != "anonymous" else {"client": key.removeprefix("addr:")}
            audit_refusal(
                self._routes.config.auth.audit_log, "rate-limit", "serving", why, details, who=label
            )

    def __del__(self) -> None:
        """Serve calls this on graceful shutdown: let running shadow calls log, then write the logs out."""
        scorer = getattr(self, "_scorer", None)
        if scorer is not None:
            scorer.close()

    async def _score(
        self, name: str, request: Request, protocol: Any, version: str | None = None
    ) -> JSONResponse:
        started = time.perf_counter()
        routes = self._routes  # one table for the whole request, even if a reconfigure lands meanwhile
        routes.specs(name)  # an unknown name is a 404 before the body is read
        fixed = routes.spec(name, version) if version is not None else None
        failure = None
        try:
            body = await read_body(request, routes.config.max_body_bytes)
        except RequestError as exc:
            failure, body = exc, b""
        answer = await self._scorer.score(
            routes, name, protocol, body, request.headers, started, fixed, failure
        )
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    @app.post("/v1/models/{name}/predict", openapi_extra=score_doc(V1))
    async def predict(self, name: str, request: Request) -> JSONResponse:
        """Predict for ``{"records": [{column: value, ...}, ...]}`` (or a bare list of records)."""
        return await self._score(name, request, _V1)

    @app.post("/v1/feedback", openapi_extra=FEEDBACK_DOC)
    async def feedback(self, request: Request) -> JSONResponse:
        """Record true outcomes: ``{"prediction_id": ID, "outcome": VALUE, "row": 0, "model": NAME}``
        or ``{"feedback": [...]}`` of those, the outcome in the task's terms (binary 0 / 1, true / false
        or the label's value; multiclass a class; regression a number); answers ``{"accepted": n}``."""
        config, predictions = self._routes.config, self._scorer.predictions
        if predictions is None:
            return _error(
                409,
                "feedback needs the prediction log, and this router has none: deploy with "
                "prediction_log={'root': ...} so that outcomes can be joined to logged predictions.",
            )
        body = await read_body(request, config.max_body_bytes)
        items = parse_feedback(body, max_items=config.max_rows_per_request)
        return JSONResponse({"accepted": predictions.log_feedback(items)})

    @app.post("/v1/models/{name}/explain", openapi_extra=EXPLAIN_DOC)
    async def explain(self, name: str, request: Request, version: str | None = None) -> JSONResponse:
        """SHAP values of each row, per raw input column: ``{"explanations": [{"prediction",
        "base_value", "shap": {column: value}}, ...]}``, in the task's output space (``output_space``),
        with ``sum(shap) + base_value == prediction``; multiclass keys each by class first
        (``"shap": {class: {column: value}}``). Same body as predict; the version is chosen as for
        predict (weights, sticky key) unless ``?version=`` names one."""
        routes = self._routes
        config = routes.config
        routes.specs(name)
        body = await read_body(request, config.max_body_bytes)
        payload = _V1.parse(body, request.headers)
        if version is not None:
            spec = routes.spec(name, version)
        else:
            spec, _, _, failure = self._scorer.route(routes, name, _V1, body, request.headers)
            if failure is not None:
                raise failure
        headers = version_headers(name, spec)
        loop = asyncio.get_running_loop()
        try:
            check_explain_rows(payload, config.max_explain_rows)
            table = (await self._inputs.collect(_V1, payload, spec, config.max_explain_rows))[0].table()
            explainer = await loop.run_in_executor(None, self._explainers.get, spec)
            explanation = await loop.run_in_executor(None, explainer.explain, table)
        except RequestError as exc:
            return _error(exc.status, exc.message, headers)
        except OnlineStoreError as exc:
            return _error(
                503, f"model {name!r} version {spec.version!r} cannot fetch its features: {exc}", headers
            )
        except Exception as exc:
            logger.exception("explain failed name=%s version=%s", name, spec.version)
            return _error(500, f"explaining model {name!r} version {spec.version!r} failed: {exc}", headers)
        prediction_id = uuid.uuid4().hex
        headers["prediction-id"] = prediction_id
        answer = {
            "model_name": name,
            "model_version": spec.version,
            "prediction_id": prediction_id,
            "method": explanation.method,
            "output_space": explanation.output_space,
            "explanations": explanation.records(),
        }
        return JSONResponse(answer, headers=headers)

    @app.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        """The names and versions served, with their input columns and this replica's identity."""
        routes = self._routes
        return {
            "models": [
                {
                    "name": s.name,
                    "version": s.version,
                    "data_version": s.data_version,
                    "weight": s.weight,
                    "threshold": s.threshold,
                    "placement": s.placement,
                    "input_columns": dict(s.input_columns),
                    # With a feature lookup: what a request carries, and what the router fetches.
                    **(
                        {
                            "request_columns": dict(s.request_columns),
                            "feature_lookup": s.feature_lookup.to_dict(),
                        }
                        if s.feature_lookup is not None
                        else {}
                    ),
                }
                for specs in routes.config.models.values()
                for s in specs
            ],
            "policies": {name: p.to_dict() for name, p in routes.config.policies.items()},
            "replica": self._replica(),
        }

    def _replica(self) -> dict[str, Any]:
        context = serve.get_replica_context()
        return {"id": context.replica_id.unique_id, "pid": os.getpid(), "config_generation": self._generation}

    @app.get("/v1/models/{name}/stats")
    async def stats(self, name: str) -> dict[str, Any]:
        """This replica's live statistics for one model name, for a rollout controller to poll.

        With several replicas each answers for itself (the Prometheus series aggregate them).
        The JSON shape::

            {
              "model": "flights",
              "replica": {"id": "...", "pid": 1234, "config_generation": 3},
              "window_size": 1000,              # requests kept per (version, route)
              "sticky": {"header": "x-user-id"} | null,
              "shadow": {"version": "3", "fraction": 0.2, "max_in_flight": 4,
                         "in_flight": 0, "dropped_total": 0} | null,
              "versions": {
                "1": {"weight": 0.95, "share": 0.95, "data_version": "...",
                      "served": ROUTE, "shadow": ROUTE | null},
                ...
              }
            }

        where ``ROUTE`` is::

            {"requests_total": 812, "errors_total": 3,    # since this replica loaded the version
             "since": 1718000000.0,                       # unix time the counting started
             "window": {"requests": 812, "errors": 3, "error_rate": 0.0037,   # the last window_size
                        "errors_by_code": {"422": 3},     # any status >= 400
                        "latency_ms": {"p50": 0.41, "p99": 1.9},
                        "mean_probability": 0.31},        # mean over requests of the request mean
             "agreement": {"compared": 150, "label_agreement": 0.97, "mean_abs_diff": 0.02}}
                                                          # shadow route only: vs the served answer

        Served latency is the handler's time from its start to the answer, reading the body from
        Serve's proxy included (that read is most of it: validating and scoring a row take about
        0.1 ms, the accounting 0.05 ms); shadow latency is the shadow model's own time. Statistics
        with nothing to summarise are ``null``.
        """
        routes = self._routes
        specs = routes.specs(name)
        policy = routes.config.policies.get(name)
        shadow = policy.shadow if policy is not None else None
        total = sum(s.weight for s in specs)
        versions = {}
        for spec in specs:
            # A version keeps its shadow statistics after it stops shadowing, until it is undeployed.
            shadowed = self._scorer.stats.has(name, spec.version, "shadow") or (
                shadow is not None and shadow.version == spec.version
            )
            versions[spec.version] = {
                "weight": spec.weight,
                "share": spec.weight / total,
                "data_version": spec.data_version,
                "served": self._scorer.stats.get(name, spec.version, "served").snapshot(),
                "shadow": self._scorer.stats.get(name, spec.version, "shadow").snapshot()
                if shadowed
                else None,
            }
        return {
            "model": name,
            "replica": self._replica(),
            "window_size": self._scorer.stats.window,
            "sticky": policy.sticky.to_dict() if policy is not None and policy.sticky is not None else None,
            "shadow": {
                **shadow.to_dict(),
                "max_in_flight": routes.config.shadow_max_in_flight,
                "in_flight": self._scorer.shadow.in_flight,
                "dropped_total": self._scorer.shadow_dropped.get((name, shadow.version), 0),
            }
            if shadow is not None
            else None,
            "versions": versions,
        }

    @app.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(self) -> Any:
        if not self._routes.models:
            return _error(503, "no model loaded: deploy at least one ModelSpec.")
        return {"ready": True}

    @app.get("/v2")
    async def server_metadata(self) -> dict[str, Any]:
        return oip_v2.server_metadata(raymlops.__version__)

    @app.get("/v2/models/{name}")
    async def model_metadata(self, name: str) -> dict[str, Any]:
        return oip_v2.model_metadata(name, self._routes.specs(name))

    @app.get("/v2/models/{name}/ready")
    async def model_ready(self, name: str) -> dict[str, Any]:
        # A name in the table has every version's session loaded: reconfigure swaps only after loading.
        self._routes.specs(name)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(self, name: str, version: str) -> dict[str, Any]:
        routes = self._routes
        return oip_v2.model_metadata(name, routes.specs(name), routes.spec(name, version))

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(self, name: str, version: str) -> dict[str, Any]:
        self._routes.spec(name, version)
        return {"name": name, "version": version, "ready": True}

    @app.post("/v2/models/{name}/infer", openapi_extra=score_doc(OipV2))
    async def infer(self, name: str, request: Request) -> JSONResponse:
        """Open Inference Protocol v2 inference, routed by the name's policy."""
        return await self._score(name, request, _V2)

    @app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=score_doc(OipV2))
    async def infer_version(self, name: str, version: str, request: Request) -> JSONResponse:
        """Inference on one explicit version (weight 0 included), bypassing routing and shadowing."""
        return await self._score(name, request, _V2, version)
