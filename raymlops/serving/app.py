"""The serving application: a FastAPI ingress inside one Ray Serve deployment, ``Router`` (DESIGN §4).

A live version's ONNX session lives inside each router replica (``placement: colocated``, the
default): a ``DeploymentHandle`` hop to a separate model deployment costs about 3.8 ms p50 here, more
than a small model itself. A version too large to copy into every router replica runs in its own
``ModelServer`` deployment behind a handle (``placement: deployment``, ``model_server``). The routing table
and policy come from ``user_config`` (shape: ``spec.build_user_config``): ``deploy()`` with a new
table calls ``reconfigure`` on the running replicas instead of restarting them (it pins the
deployment's code version; see ``deploy._versioned``).

Per request: choose the version (weighted, or sticky by a key; ``policy.choose_version``), score it
inline, answer; then, off the request path, maybe hand the same rows to the shadow version on a
one-thread pool (bounded: beyond ``shadow_max_in_flight`` calls a sampled shadow call is dropped and
counted). Endpoints:

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
import random
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

import raymlops
from raymlops.errors import ModelNotFoundError, OnlineStoreError, RequestError, did_you_mean
from raymlops.features.online import OnlineStore, open_online_store
from raymlops.monitoring.prediction_log import PredictionLogger, parse_feedback
from raymlops.security.pii import masker_from_settings
from raymlops.serving import oip
from raymlops.serving.app_logging import LOGGING_CONFIG
from raymlops.serving.auth import ApiKeyMiddleware, AuthTable
from raymlops.serving.feature_lookup import with_features
from raymlops.serving.metrics import ServingMetrics, StatsBook
from raymlops.serving.model_server import RemoteModel, deployment_name
from raymlops.serving.onnx_model import (
    RECORDS_SCHEMA,
    LoadedModel,
    ModelInputs,
    check_text,
    parse_records,
    records_to_inputs,
)
from raymlops.serving.ood import OODCheck
from raymlops.serving.policy import (
    ShadowPool,
    agreement,
    choose_version,
    sample_shadow,
    sticky_key_from_fields,
)
from raymlops.serving.rate_limit import RateLimitMiddleware, RateLimitSettings
from raymlops.serving.spec import (
    ModelSpec,
    OnlineStoreSettings,
    PredictionLogSettings,
    RoutingConfig,
    node_local,
    parse_user_config,
)

__all__ = ["LOGGING_CONFIG", "Router", "app", "choose_version"]

logger = logging.getLogger(__name__)


# Every error answer is {"error": "..."}; the OpenAPI document declares it for every 4xx a route can
# give (and 503), so that clients, and the fuzz test's response checks, know every answer's shape.
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_ERROR_STATUSES = {
    400: "The body is not valid JSON (or binary tensor framing).",
    401: "No API key, or an invalid one (auth on).",
    403: "The key's role may not call this route.",
    404: "No such model, version or route.",
    405: "The route does not take this method.",
    409: "Feedback without a prediction log.",
    413: "The body exceeds max_body_bytes.",
    422: "The request breaks the input schema, a limit, or (ood.action=reject) the training profile.",
    429: "Rate limit exceeded; retry after Retry-After seconds.",
    503: "Not ready, or the online store cannot be reached.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds until the client's next request is allowed.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
        **({"headers": _RETRY_AFTER} if status == 429 else {}),
    }
    for status, description in _ERROR_STATUSES.items()
}

# tritonclient posts its JSON (or JSON + binary tensors) with no Content-Type header: every scoring
# endpoint reads the raw body itself instead of letting FastAPI parse it.
app = FastAPI(title="raymlops serving", version="1", responses=_ERROR_RESPONSES)


def _body_doc(
    schema: Mapping[str, Any],
    example: Any,
    description: str = "JSON",
    answer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` declaring the JSON body a raw-body endpoint reads, so that the OpenAPI
    document (and the clients and fuzzers built from it) shows it; FastAPI neither parses nor checks it.
    ``answer``: the JSON schema of its 200 answer (FastAPI cannot infer it from a JSONResponse).
    """
    content = {"application/json": {"schema": dict(schema), "example": example}}
    extra: dict[str, Any] = {
        "requestBody": {"required": True, "description": description, "content": content}
    }
    if answer is not None:
        ok = {"description": "Successful Response", "content": {"application/json": {"schema": dict(answer)}}}
        extra["responses"] = {"200": ok}
    return extra


_COLUMNS = {"type": "array", "items": {"type": "string"}}
_PREDICT_ANSWER = {
    "type": "object",
    "required": ["model_name", "model_version", "prediction_id", "predictions"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "prediction_id": {"type": "string"},
        "predictions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["probability", "label"],
                "additionalProperties": False,
                "properties": {
                    "probability": {"type": "number", "minimum": 0, "maximum": 1},
                    "label": {"enum": [0, 1]},
                    "imputed": {**_COLUMNS, "description": "Feature views the row was missing from."},
                    "ood": {
                        **_COLUMNS,
                        "description": "Columns whose value lies outside the version's training profile "
                        "(present when the version is checked: serve.ood.enabled and a registered profile).",
                    },
                },
            },
        },
    },
}
_INFER_ANSWER = {
    "type": "object",
    "required": ["id", "model_name", "model_version", "parameters", "outputs"],
    "properties": {
        "id": {"type": "string"},
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "parameters": {
            "type": "object",
            "required": ["prediction_id"],
            "properties": {
                "prediction_id": {"type": "string"},
                "imputed": {"type": "array", "items": _COLUMNS},
                "ood_rows": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Rows flagged out of distribution.",
                },
                "ood": {
                    "type": "string",
                    "description": "JSON array: per row, the columns outside the training profile.",
                },
            },
        },
        "outputs": {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape", "data"],
                "properties": {
                    "name": {"const": oip.OUTPUT_NAME},
                    "datatype": {"const": "FP32"},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "data": {"type": "array", "items": {"type": "number"}},
                },
            },
        },
    },
}


_PREDICT_DOC = _body_doc(
    RECORDS_SCHEMA,
    {"records": [{"distance": 1400.0, "hour": 7, "origin": "JFK"}]},
    answer=_PREDICT_ANSWER,
)
_EXPLAIN_DOC = _body_doc(RECORDS_SCHEMA, {"records": [{"distance": 1400.0, "hour": 7, "origin": "JFK"}]})
_INFER_DOC = _body_doc(
    oip.INFER_REQUEST_SCHEMA,
    {"inputs": [{"name": "distance", "datatype": "FP32", "shape": [1, 1], "data": [1400.0]}]},
    description="JSON; or, with an Inference-Header-Content-Length header, that many bytes of JSON "
    "followed by the tensors' raw bytes (the binary tensor extension, which tritonclient uses).",
    answer=_INFER_ANSWER,
)
_FEEDBACK_ITEM = {
    "type": "object",
    "required": ["prediction_id", "outcome"],
    "additionalProperties": False,
    "properties": {
        "prediction_id": {"type": "string", "minLength": 1, "maxLength": 256},  # prediction_log's limits
        "outcome": {"type": "number"},
        "row": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "model": {"type": ["string", "null"], "minLength": 1},  # null: not given
    },
}
_FEEDBACK_DOC = _body_doc(
    {
        "anyOf": [
            _FEEDBACK_ITEM,
            {
                "type": "object",
                "required": ["feedback"],
                "additionalProperties": False,
                "properties": {"feedback": {"type": "array", "minItems": 1, "items": _FEEDBACK_ITEM}},
            },
            {"type": "array", "minItems": 1, "items": _FEEDBACK_ITEM},
        ]
    },
    {"prediction_id": "0b7e6a1c9d2f4e3a8b5c6d7e8f901234", "outcome": 1, "row": 0},
)


def _auth_table() -> AuthTable:
    """The replica's key table, read on every request: a ``deploy()`` with new keys applies in place."""
    router: Any = serve.get_replica_context().servable_object
    return router._routes.config.auth


def _rate_limit() -> RateLimitSettings:
    router: Any = serve.get_replica_context().servable_object
    return router._routes.config.rate_limit


def _rate_limited(label: str, key: str, retry_after_s: int, first: bool) -> None:
    router: Any = serve.get_replica_context().servable_object
    router._on_rate_limited(label, key, retry_after_s, first)


# Starlette runs the middleware added last first: auth, then the rate limit by the verified key id.
app.add_middleware(RateLimitMiddleware, settings=_rate_limit, on_limited=_rate_limited)
app.add_middleware(ApiKeyMiddleware, table=_auth_table)  # API keys and roles (auth.ROUTE_ROLES)


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


# Where a version runs: in this replica, or in its own deployment behind a handle (``model_server``).
ServedModel = LoadedModel | RemoteModel


@dataclass(frozen=True)
class _Routes:
    """What one reconfigure produced; swapped in whole so a request never sees half a table."""

    config: RoutingConfig = field(default_factory=lambda: RoutingConfig(models={}))
    models: dict[tuple[str, str], "ServedModel"] = field(default_factory=dict)
    # Out-of-distribution bounds of the versions checked (an input_profile, serve.ood.enabled).
    ood: dict[tuple[str, str], OODCheck] = field(default_factory=dict)

    def specs(self, name: str) -> tuple[ModelSpec, ...]:
        specs = self.config.models.get(name)
        if specs is None:
            raise ModelNotFoundError(name, self.config.models)
        return specs

    def spec(self, name: str, version: str) -> ModelSpec:
        specs = self.specs(name)
        for spec in specs:
            if spec.version == version:
                return spec
        raise RequestError(
            f"Unknown version {version!r} of model {name!r}."
            + did_you_mean(version, [s.version for s in specs]),
            status=404,
        )


class _Protocol:
    """How one API reads a request and writes an answer; the routing in between is shared."""

    @staticmethod
    def parse(body: bytes, headers: Headers) -> Any:
        raise NotImplementedError

    @staticmethod
    def sticky_key(payload: Any, field: str) -> str | None:
        raise NotImplementedError

    @staticmethod
    def inputs(payload: Any, spec: ModelSpec, max_rows: int) -> ModelInputs:
        raise NotImplementedError

    @staticmethod
    def answer(
        name: str,
        spec: ModelSpec,
        prediction_id: str,
        probabilities: np.ndarray,
        payload: Any,
        imputed: list[list[str]] | None = None,
        ood: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        raise NotImplementedError


class _V1(_Protocol):
    """``/v1/models/{name}/predict``: ``{"records": [...]}`` or a bare list of records."""

    @staticmethod
    def parse(body: bytes, headers: Headers) -> Any:
        return parse_records(body)

    @staticmethod
    def sticky_key(payload: Any, field: str) -> str | None:
        key = sticky_key_from_fields(payload[0], field) if isinstance(payload, list) and payload else None
        return None if key is None else check_text(key, f"the sticky key {field!r}")  # hashed as UTF-8

    @staticmethod
    def inputs(payload: Any, spec: ModelSpec, max_rows: int) -> ModelInputs:
        return records_to_inputs(payload, spec.request_columns, max_rows)

    @staticmethod
    def answer(
        name: str,
        spec: ModelSpec,
        prediction_id: str,
        probabilities: np.ndarray,
        payload: Any,
        imputed: list[list[str]] | None = None,
        ood: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        threshold = spec.threshold
        predictions = [{"probability": p, "label": int(p >= threshold)} for p in probabilities.tolist()]
        if imputed is not None:  # a version with a feature lookup: the views each row was missing from
            for prediction, views in zip(predictions, imputed, strict=True):
                prediction["imputed"] = views
        if ood is not None:  # a version checked against its training profile: the columns outside it
            for prediction, columns in zip(predictions, ood, strict=True):
                prediction["ood"] = columns
        return {
            "model_name": name,
            "model_version": spec.version,
            "prediction_id": prediction_id,
            "predictions": predictions,
        }


class _V2(_Protocol):
    """Open Inference Protocol v2 ``infer`` (see ``oip``)."""

    @staticmethod
    def parse(body: bytes, headers: Headers) -> Any:
        return oip.parse_infer_request(body, headers.get(oip.HEADER_LENGTH))

    @staticmethod
    def sticky_key(payload: Any, field: str) -> str | None:
        return oip.sticky_key(payload, field)

    @staticmethod
    def inputs(payload: Any, spec: ModelSpec, max_rows: int) -> ModelInputs:
        return oip.infer_inputs(payload, spec.request_columns, max_rows)

    @staticmethod
    def answer(
        name: str,
        spec: ModelSpec,
        prediction_id: str,
        probabilities: np.ndarray,
        payload: Any,
        imputed: list[list[str]] | None = None,
        ood: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        answer = oip.infer_response(name, spec.version, payload.id, prediction_id, probabilities)
        if imputed is not None:
            answer["parameters"]["imputed"] = imputed
        if ood is not None:
            answer["parameters"].update(oip.ood_parameters(ood))
        return answer


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(
            f"request body of {declared} bytes exceeds the limit of {max_bytes} bytes; split the request.",
            status=413,
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:  # chunked uploads declare no length
            raise RequestError(
                f"request body exceeds the limit of {max_bytes} bytes; split the request.", status=413
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _start_gauge_refresh(metrics: ServingMetrics) -> None:
    """A daemon thread re-setting the gauges every half report interval (see refresh_gauges)."""
    import threading

    try:
        import ray

        interval_s = max(0.5, ray._config.metrics_report_interval_ms() / 2000)
    except Exception:  # a private API: fall back to Ray's default 10 s interval
        interval_s = 5.0

    def refresh() -> None:
        while True:
            time.sleep(interval_s)
            metrics.refresh_gauges()

    threading.Thread(target=refresh, name="raymlops-gauges", daemon=True).start()


def _fallback(specs: tuple[ModelSpec, ...], failed: ModelSpec) -> ModelSpec | None:
    """The version that answers when ``failed`` raised: the one with the most traffic, if not it."""
    others = [s for s in specs if s.version != failed.version and s.weight > 0]
    return max(others, key=lambda s: s.weight) if others else None


def _explainer_dir(onnx_path: str) -> Path | None:
    """The packaged explainer next to a version's ONNX file (``stages/register``), if there is one."""
    folder = Path(onnx_path).parent / "explainer"
    return folder if (folder / "explainer.json").is_file() else None


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, logging_config=LOGGING_CONFIG)
@serve.ingress(app)
class Router:
    """Serves every live version of every model name; routing policy from ``user_config``."""

    def __init__(self, *model_servers: Any) -> None:
        # Handles of the app's ModelServer deployments (``placement: deployment``), bound by deploy();
        # a version added later by a routing change alone is looked up by name (``_handle``).
        self._handles = {h.deployment_name: h for h in model_servers}
        self._routes = _Routes()
        self._rng = random.Random()
        self._generation = 0  # counts reconfigures: proves a config change reached a live replica
        self._metrics = ServingMetrics()  # Ray registers each metric once per process
        _start_gauge_refresh(self._metrics)
        self._stats = StatsBook(self._routes.config.stats_window)
        self._shadow = ShadowPool()
        self._shadow_dropped: dict[tuple[str, str], int] = {}
        self._warned: set[tuple[str, str, str]] = set()
        # Prediction log (None: off) and the settings it was opened with; see _reconfigure_log.
        self._predictions: PredictionLogger | None = None
        self._log_settings: PredictionLogSettings | None = None
        # Packaged SHAP explainers by ONNX path, loaded on first use or by the warm-up thread.
        self._explainers: dict[str, Any] = {}
        self._explainer_lock = threading.Lock()
        # Online feature store (None: no served version has a feature lookup); see _reconfigure_store.
        self._store: OnlineStore | None = None
        self._store_settings: OnlineStoreSettings | None = None
        # Store lookups block on I/O: run them here, off the event loop (a few at once per replica).
        self._lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="raymlops-features")

    def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        """Load the versions of a new routing table, reusing sessions already loaded, then swap."""
        config = parse_user_config(user_config)
        # A version downloaded by the deploying process from a remote store: this node's own copy.
        local = {name: tuple(node_local(s) for s in specs) for name, specs in config.models.items()}
        config = dataclasses.replace(config, models=local)
        self._reconfigure_store(config)  # before the swap: the new table's lookups need it
        old = self._routes
        models: dict[tuple[str, str], ServedModel] = {}
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
        self._stats.retain(models, config.stats_window)
        ood = {}
        if config.ood.enabled:
            for name, specs in config.models.items():
                for spec in specs:
                    if spec.input_profile:
                        ood[(name, spec.version)] = OODCheck(spec.input_profile, config.ood.range_margin)
        self._routes = _Routes(config, models, ood)
        self._generation += 1
        weights = {}
        for name, specs in config.models.items():
            total = sum(s.weight for s in specs)
            weights.update({(name, s.version): s.weight / total for s in specs})
        self._metrics.routing_weights(weights)
        self._reconfigure_log(config)
        self._prepare_explainers(config)
        logger.info(
            "router reconfigured generation=%d models=%s policies=%s",
            self._generation,
            {name: [(s.version, s.weight) for s in specs] for name, specs in config.models.items()},
            {name: p.to_dict() for name, p in config.policies.items()},
        )

    def _reconfigure_store(self, config: RoutingConfig) -> None:
        """Open the online store the new table names (only if a version needs one), or keep the open one."""
        needed = any(s.feature_lookup is not None for specs in config.models.values() for s in specs)
        settings = config.online_store if needed else None
        if settings == self._store_settings:
            return
        store = None if settings is None else open_online_store(settings)
        old, self._store, self._store_settings = self._store, store, settings
        logger.info("online store settings=%s", settings.to_dict() if settings is not None else None)
        if old is not None:
            old.close()

    async def _inputs(
        self, protocol: type["_Protocol"], payload: Any, spec: ModelSpec, max_rows: int
    ) -> tuple[ModelInputs, list[list[str]] | None]:
        """The version's inputs for a request, with its features fetched when it has a feature lookup."""
        request = protocol.inputs(payload, spec, max_rows)
        if spec.feature_lookup is None:
            return request, None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._lookups, self._fetch, request, spec)

    def _fetch(self, request: ModelInputs, spec: ModelSpec) -> tuple[ModelInputs, list[list[str]]]:
        store = self._store
        if store is None or spec.feature_lookup is None:  # parse_user_config refuses a lookup without one
            raise OnlineStoreError("(none)", "this router has no online store configured.")
        return with_features(request, spec.feature_lookup, spec.input_columns, store)

    def _handle(self, spec: ModelSpec) -> Any:
        name = deployment_name(spec)
        handle = self._handles.get(name)
        if handle is None:
            handle = serve.get_deployment_handle(name, serve.get_replica_context().app_name)
            self._handles[name] = handle
        return handle

    async def _score(
        self, name: str, request: Request, protocol: type[_Protocol], version: str | None = None
    ) -> JSONResponse:
        started = time.perf_counter()
        routes = self._routes  # one table for the whole request, even if a reconfigure lands meanwhile
        config = routes.config
        specs = routes.specs(name)
        fixed = routes.spec(name, version) if version is not None else None
        # Errors found before the version is chosen are held back and answered as that version's, so
        # that they are counted against it like any other failed request.
        failure: RequestError | None = None
        payload: Any = None
        parsed = False
        try:
            body = await _read_body(request, config.max_body_bytes)
        except RequestError as exc:
            failure, body = exc, b""
        policy = config.policies.get(name)
        if fixed is not None:
            spec = fixed
        else:
            key = None
            sticky = policy.sticky if policy is not None else None
            if sticky is not None and sticky.source == "header":
                key = request.headers.get(sticky.key)
            elif sticky is not None and failure is None:
                try:
                    payload, parsed = protocol.parse(body, request.headers), True
                    key = protocol.sticky_key(payload, sticky.key)
                except RequestError as exc:
                    failure = exc
            spec = choose_version(specs, self._rng, key=key, name=name)
        model = routes.models[(name, spec.version)]
        headers = {"model-name": name, "model-version": spec.version, "data-version": spec.data_version}
        try:
            if failure is not None:
                raise failure
            if not parsed:
                payload = protocol.parse(body, request.headers)
            inputs, imputed = await self._inputs(protocol, payload, spec, config.max_rows_per_request)
            ood = self._check_ood(routes, name, spec, inputs)
            probabilities = await model.apredict(inputs)
        except RequestError as exc:
            self._record_served(name, spec.version, started, exc.status)
            return _error(exc.status, exc.message, headers)
        except OnlineStoreError as exc:
            # Every version reads the same store: no fallback can answer. 503: retry later.
            self._record_served(name, spec.version, started, 503)
            self._warn_once(name, spec.version, exc, "online-store")
            return _error(
                503, f"model {name!r} version {spec.version!r} cannot fetch its features: {exc}", headers
            )
        except Exception as exc:
            self._record_served(name, spec.version, started, 500)
            fallback = _fallback(specs, spec) if fixed is None else None
            if fallback is None:
                logger.exception("model failed name=%s version=%s", name, spec.version)
                return _error(500, f"model {name!r} version {spec.version!r} failed: {exc}", headers)
            # A failing candidate costs its clients nothing: the version with the most traffic answers,
            # and the failure still counts against the candidate (a rollout rolls it back on it).
            self._warn_once(name, spec.version, exc)
            failed, spec, model = spec.version, fallback, routes.models[(name, fallback.version)]
            headers = {
                "model-name": name,
                "model-version": spec.version,
                "data-version": spec.data_version,
                "fallback-from": failed,
            }
            started = time.perf_counter()
            try:
                inputs, imputed = await self._inputs(protocol, payload, spec, config.max_rows_per_request)
                ood = self._check_ood(routes, name, spec, inputs)
                probabilities = await model.apredict(inputs)
            except RequestError as second_request:
                self._record_served(name, spec.version, started, second_request.status)
                return _error(second_request.status, second_request.message, headers)
            except OnlineStoreError as store_error:
                self._record_served(name, spec.version, started, 503)
                return _error(503, f"model {name!r} version {spec.version!r}: {store_error}", headers)
            except Exception as second:
                self._record_served(name, spec.version, started, 500)
                logger.exception("fallback model failed name=%s version=%s", name, spec.version)
                return _error(500, f"model {name!r} versions {failed!r}, {spec.version!r} failed: {second}")
        prediction_id = uuid.uuid4().hex
        body_out = protocol.answer(name, spec, prediction_id, probabilities, payload, imputed, ood)
        self._record_served(name, spec.version, started, 200, probabilities)
        predictions = self._predictions
        if predictions is not None:  # a buffer push: the log's own thread writes the files
            latency_ms = (time.perf_counter() - started) * 1e3
            predictions.log(spec, "served", prediction_id, inputs.table(), probabilities, latency_ms)
        shadow = policy.shadow if policy is not None and fixed is None else None
        if shadow is not None and sample_shadow(shadow, spec.version, self._rng):
            self._start_shadow(
                routes, name, spec, shadow.version, protocol, payload, inputs, probabilities, prediction_id
            )
        headers["prediction-id"] = prediction_id
        return JSONResponse(body_out, headers=headers)

    def _check_ood(
        self, routes: _Routes, name: str, spec: ModelSpec, inputs: ModelInputs
    ) -> list[list[str]] | None:
        """Per row, the columns outside the version's training profile (None: not checked); counted
        in metrics. With ``ood.action: reject`` a flagged row refuses the request (RequestError, 422)."""
        check = routes.ood.get((name, spec.version))
        if check is None:
            return None
        flags = check.flags(inputs)
        if not any(flags):
            return flags
        self._metrics.ood_rows(name, spec.version, flags)
        if routes.config.ood.action == "reject":
            refusal = check.refusal(inputs, flags)
            column = next(columns[0] for columns in flags if columns)
            if (name, spec.version, f"ood:{column}") not in self._warned:  # one audit record per column
                self._warned.add((name, spec.version, f"ood:{column}"))
                self._audit_refusal(
                    "predict", f"{name} v{spec.version}", refusal.message, {"column": column}, routes
                )
            raise refusal
        return flags

    def _on_rate_limited(self, label: str, key: str, retry_after_s: int, first: bool) -> None:
        """A 429 of the rate limit: counted; the first of a client's run of refusals is audited."""
        self._metrics.rate_limited(label)
        if first:
            logger.info("rate limited client=%s retry_after_s=%d", label, retry_after_s)
            why = f"429 rate limit exceeded; retry after {retry_after_s} s"
            details = {"key_id": label} if label != "anonymous" else {"client": key.removeprefix("addr:")}
            self._audit_refusal("rate-limit", "serving", why, details, self._routes, who=label)

    def _audit_refusal(
        self,
        action: str,
        target: str,
        why: str,
        details: dict[str, Any],
        routes: _Routes,
        who: str = "anonymous",
    ) -> None:
        """A security audit record in ``serve.auth.audit_log`` (none configured: nothing), written on a
        thread: the append takes a file lock and must not stall the event loop."""
        path = routes.config.auth.audit_log
        if not path:
            return
        from raymlops.security.audit import audit_event

        def write() -> None:
            try:
                audit_event(action, target, "refused", why, who=who, details=details, path=path)
            except OSError:  # an unwritable audit log must not fail the request
                logger.exception("audit log %s not writable", path)

        threading.Thread(target=write, name="raymlops-audit", daemon=True).start()

    def _warn_once(self, name: str, version: str, exc: Exception, route: str = "served") -> None:
        """Log a model's run-time failure once per (version, route), not once per request."""
        if (name, version, route) not in self._warned:
            self._warned.add((name, version, route))
            logger.warning("%s model failed name=%s version=%s error=%r", route, name, version, exc)

    def _record_served(
        self, name: str, version: str, started: float, code: int, probabilities: np.ndarray | None = None
    ) -> None:
        latency_s = time.perf_counter() - started
        self._metrics.request(name, version, "served", latency_s, code=code, probabilities=probabilities)
        mean = float(probabilities.mean()) if probabilities is not None and probabilities.size else np.nan
        self._stats.get(name, version, "served").record(latency_s, code, mean)

    def _start_shadow(
        self,
        routes: _Routes,
        name: str,
        served: ModelSpec,
        version: str,
        protocol: type[_Protocol],
        payload: Any,
        served_inputs: ModelInputs,
        served_probabilities: np.ndarray,
        prediction_id: str,
    ) -> None:
        model = routes.models[(name, version)]
        max_rows = routes.config.max_rows_per_request

        def job() -> None:
            started = time.perf_counter()
            spec = model.spec
            code, probabilities = 200, None
            label_agreement = mean_abs_diff = 0.0
            try:
                same_inputs = spec.input_columns == served.input_columns
                if same_inputs:
                    inputs = served_inputs
                else:
                    inputs = protocol.inputs(payload, spec, max_rows)
                    if spec.feature_lookup is not None:
                        inputs = self._fetch(inputs, spec)[0]
                probabilities = model.predict_inputs(inputs)
                label_agreement, mean_abs_diff = agreement(
                    served_probabilities, served.threshold, probabilities, spec.threshold
                )
            except RequestError as exc:
                code = exc.status
            except OnlineStoreError:
                code = 503
            except Exception as exc:
                code = 500
                self._warn_once(name, version, exc, "shadow")
            latency_s = time.perf_counter() - started
            self._metrics.request(name, version, "shadow", latency_s, code=code)
            stats = self._stats.get(name, version, "shadow")
            if probabilities is None or code != 200:
                stats.record(latency_s, code)
                return
            stats.record(latency_s, code, float(probabilities.mean()))
            stats.record_agreement(label_agreement, mean_abs_diff)
            self._metrics.shadow_agreement(name, version, label_agreement)
            predictions = self._predictions
            if predictions is not None:
                predictions.log(spec, "shadow", prediction_id, inputs.table(), probabilities, latency_s * 1e3)

        if not self._shadow.submit(routes.config.shadow_max_in_flight, job):
            key = (name, version)
            self._shadow_dropped[key] = self._shadow_dropped.get(key, 0) + 1
            self._metrics.shadow_dropped(name, version)

    @app.post("/v1/models/{name}/predict", openapi_extra=_PREDICT_DOC)
    async def predict(self, name: str, request: Request) -> JSONResponse:
        """Predict for ``{"records": [{column: value, ...}, ...]}`` (or a bare list of records)."""
        return await self._score(name, request, _V1)

    # -- prediction log, feedback, explanations ----------------------------------------------------

    def _reconfigure_log(self, config: RoutingConfig) -> None:
        """Open, keep, or write out and close the prediction log as ``config.prediction_log`` says.

        A different root or flush setting closes the old writer (writing out what it holds) before
        the new one takes over; requests that raced the swap still land in the old one's files.
        """
        settings, current = config.prediction_log, self._predictions
        if settings == self._log_settings:
            if current is not None:
                current.retain(s for specs in config.models.values() for s in specs)
            return
        self._predictions = (
            None
            if settings is None
            else PredictionLogger(
                settings.root,
                flush_rows=settings.flush_rows,
                flush_interval_s=settings.flush_interval_s,
                pii=masker_from_settings(settings.pii),  # the key from the cluster's store, never a setting
            )
        )
        self._log_settings = settings
        if current is not None:
            current.close()
        logger.info("prediction log settings=%s", settings.to_dict() if settings is not None else None)

    def __del__(self) -> None:
        """Serve calls this on graceful shutdown: let running shadow calls log, then write the logs out."""
        predictions = getattr(self, "_predictions", None)
        if predictions is None:
            return
        deadline = time.monotonic() + 5.0
        while self._shadow.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        predictions.close()

    @app.post("/v1/feedback", openapi_extra=_FEEDBACK_DOC)
    async def feedback(self, request: Request) -> JSONResponse:
        """Record true outcomes: ``{"prediction_id": ID, "outcome": NUMBER, "row": 0, "model": NAME}``
        or ``{"feedback": [...]}`` of those; answers ``{"accepted": n}``."""
        config, predictions = self._routes.config, self._predictions
        if predictions is None:
            return _error(
                409,
                "feedback needs the prediction log, and this router has none: deploy with "
                "prediction_log={'root': ...} so that outcomes can be joined to logged predictions.",
            )
        body = await _read_body(request, config.max_body_bytes)
        items = parse_feedback(body, max_items=config.max_rows_per_request)
        return JSONResponse({"accepted": predictions.log_feedback(items)})

    def _prepare_explainers(self, config: RoutingConfig) -> None:
        """Forget explainers of versions no longer served; load and warm the new ones in the background.

        shap compiles its kernels on the first explanation in a process (~10 s on 2 cores): doing it
        here, off the request path, keeps the first ``/explain`` fast. A request that comes first
        still gets its answer, later.
        """
        paths = {s.onnx_path for specs in config.models.values() for s in specs}
        with self._explainer_lock:
            for path in set(self._explainers) - paths:
                del self._explainers[path]
        packaged = [
            s for specs in config.models.values() for s in specs if _explainer_dir(s.onnx_path) is not None
        ]
        if not packaged:
            return  # no shap import in replicas that will never explain

        def warm() -> None:
            from raymlops.evaluation.explain import warm_up

            for spec in packaged:
                try:
                    self._explainer(spec)
                except Exception as exc:  # answered per request (404/500) when asked for
                    logger.warning(
                        "explainer not loaded name=%s version=%s error=%s", spec.name, spec.version, exc
                    )
            seconds = warm_up()
            logger.info("explainers ready versions=%d shap_compile_s=%.1f", len(packaged), seconds)

        threading.Thread(target=warm, name="raymlops-explainer-warmup", daemon=True).start()

    def _explainer(self, spec: ModelSpec) -> Any:
        """The version's packaged explainer (``<dir of onnx_path>/explainer/``), loaded once."""
        folder = _explainer_dir(spec.onnx_path)
        if folder is None:
            raise RequestError(
                f"model {spec.name!r} version {spec.version!r} has no explainer: none is packaged next to "
                f"its ONNX file ({Path(spec.onnx_path).parent / 'explainer'}/explainer.json); register "
                "the version from a pipeline with the explain stage, or explain another version (?version=).",
                status=404,
            )
        with self._explainer_lock:
            explainer = self._explainers.get(spec.onnx_path)
            if explainer is None:
                from raymlops.evaluation.explain import load_explainer
                from raymlops.security.integrity import read_artifact

                # The graph's bytes as served: decrypted, checked against the registered digest.
                graph = read_artifact(
                    spec.onnx_path, digest=spec.digest or None, what=f"{spec.name} v{spec.version}"
                )
                explainer = self._explainers[spec.onnx_path] = load_explainer(folder, graph)
        return explainer

    @app.post("/v1/models/{name}/explain", openapi_extra=_EXPLAIN_DOC)
    async def explain(self, name: str, request: Request, version: str | None = None) -> JSONResponse:
        """SHAP values of each row, per raw input column: ``{"explanations": [{"prediction",
        "base_value", "shap": {column: value}}, ...]}``, in probability space, with
        ``sum(shap) + base_value == prediction``. Same body as predict; the version is chosen as for
        predict (weights, sticky key) unless ``?version=`` names one."""
        routes = self._routes
        config = routes.config
        specs = routes.specs(name)
        body = await _read_body(request, config.max_body_bytes)
        payload = _V1.parse(body, request.headers)
        if version is not None:
            spec = routes.spec(name, version)
        else:
            policy = config.policies.get(name)
            sticky = policy.sticky if policy is not None else None
            key = None
            if sticky is not None:
                key = (
                    request.headers.get(sticky.key)
                    if sticky.source == "header"
                    else _V1.sticky_key(payload, sticky.key)
                )
            spec = choose_version(specs, self._rng, key=key, name=name)
        headers = {"model-name": name, "model-version": spec.version, "data-version": spec.data_version}
        if isinstance(payload, list) and len(payload) > config.max_explain_rows:
            return _error(
                422,
                f"too many records to explain: {len(payload)} exceeds max_explain_rows="
                f"{config.max_explain_rows} (explaining costs about 0.2 s per 100 rows); split the request.",
                headers,
            )
        loop = asyncio.get_running_loop()
        try:
            table = (await self._inputs(_V1, payload, spec, config.max_explain_rows))[0].table()
            explainer = await loop.run_in_executor(None, self._explainer, spec)
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
            shadowed = self._stats.has(name, spec.version, "shadow") or (
                shadow is not None and shadow.version == spec.version
            )
            versions[spec.version] = {
                "weight": spec.weight,
                "share": spec.weight / total,
                "data_version": spec.data_version,
                "served": self._stats.get(name, spec.version, "served").snapshot(),
                "shadow": self._stats.get(name, spec.version, "shadow").snapshot() if shadowed else None,
            }
        return {
            "model": name,
            "replica": self._replica(),
            "window_size": self._stats.window,
            "sticky": policy.sticky.to_dict() if policy is not None and policy.sticky is not None else None,
            "shadow": {
                **shadow.to_dict(),
                "max_in_flight": routes.config.shadow_max_in_flight,
                "in_flight": self._shadow.in_flight,
                "dropped_total": self._shadow_dropped.get((name, shadow.version), 0),
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
        return oip.server_metadata(raymlops.__version__)

    @app.get("/v2/models/{name}")
    async def model_metadata(self, name: str) -> dict[str, Any]:
        return oip.model_metadata(name, self._routes.specs(name))

    @app.get("/v2/models/{name}/ready")
    async def model_ready(self, name: str) -> dict[str, Any]:
        # A name in the table has every version's session loaded: reconfigure swaps only after loading.
        self._routes.specs(name)
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(self, name: str, version: str) -> dict[str, Any]:
        routes = self._routes
        return oip.model_metadata(name, routes.specs(name), routes.spec(name, version))

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(self, name: str, version: str) -> dict[str, Any]:
        self._routes.spec(name, version)
        return {"name": name, "version": version, "ready": True}

    @app.post("/v2/models/{name}/infer", openapi_extra=_INFER_DOC)
    async def infer(self, name: str, request: Request) -> JSONResponse:
        """Open Inference Protocol v2 inference, routed by the name's policy."""
        return await self._score(name, request, _V2)

    @app.post("/v2/models/{name}/versions/{version}/infer", openapi_extra=_INFER_DOC)
    async def infer_version(self, name: str, version: str, request: Request) -> JSONResponse:
        """Inference on one explicit version (weight 0 included), bypassing routing and shadowing."""
        return await self._score(name, request, _V2, version)
