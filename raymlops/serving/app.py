"""The serving application: a FastAPI ingress inside one Ray Serve deployment, ``Router`` (DESIGN §4).

Every live version's ONNX session lives inside each router replica: a ``DeploymentHandle`` hop to a
separate model deployment costs about 3.8 ms p50 here, more than the model itself. The routing table
comes from ``user_config``: ``deploy()`` with a new table calls ``reconfigure`` on the running
replicas instead of restarting them (it pins the deployment's code version; see ``deploy._versioned``).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time,
# and once ``serve.ingress`` has rewrapped the methods, string annotations no longer resolve
# (``request: Request`` silently turns into a required query parameter).

import logging
import os
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.schema import LoggingConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from raymlops.errors import ModelNotFoundError, RequestError
from raymlops.serving.onnx_model import LoadedModel, parse_records, records_to_table
from raymlops.serving.spec import ModelSpec, choose_version, parse_user_config

__all__ = ["LOGGING_CONFIG", "Router", "app", "choose_version"]

logger = logging.getLogger(__name__)

# Per-request INFO access logs cost about 10% of throughput and flood the job's logs.
LOGGING_CONFIG = LoggingConfig(enable_access_log=False, log_level="WARNING")

app = FastAPI(title="raymlops serving", version="1")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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


@dataclass(frozen=True)
class _Routes:
    """What one reconfigure produced; swapped in whole so a request never sees half a table."""

    specs: dict[str, tuple[ModelSpec, ...]] = field(default_factory=dict)
    models: dict[tuple[str, str], LoadedModel] = field(default_factory=dict)
    max_rows: int = 10_000
    use_gpu: bool = False


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, logging_config=LOGGING_CONFIG)
@serve.ingress(app)
class Router:
    """Serves every live version of every model name; routing policy from ``user_config``."""

    def __init__(self) -> None:
        self._routes = _Routes()
        self._rng = random.Random()
        self._generation = 0  # counts reconfigures: proves a config change reached a live replica

    def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        """Load the versions of a new routing table, reusing sessions already loaded, then swap."""
        config = parse_user_config(user_config)
        old = self._routes
        models: dict[tuple[str, str], LoadedModel] = {}
        for name, specs in config.models.items():
            for spec in specs:
                previous = old.models.get((name, spec.version))
                if previous is not None and previous.can_reuse_for(spec, use_gpu=config.use_gpu):
                    models[(name, spec.version)] = previous.with_spec(spec)
                else:
                    models[(name, spec.version)] = LoadedModel(spec, use_gpu=config.use_gpu)
        self._routes = _Routes(config.models, models, config.max_rows_per_request, config.use_gpu)
        self._generation += 1
        logger.info(
            "router reconfigured generation=%d models=%s",
            self._generation,
            {name: [s.version for s in specs] for name, specs in config.models.items()},
        )

    @app.post("/v1/models/{name}/predict")
    async def predict(self, name: str, request: Request) -> JSONResponse:
        """Predict for ``{"records": [{column: value, ...}, ...]}`` (or a bare list of records)."""
        routes = self._routes  # one table for the whole request, even if a reconfigure lands meanwhile
        specs = routes.specs.get(name)
        if specs is None:
            raise ModelNotFoundError(name, routes.specs)
        records = parse_records(await request.body())
        spec = choose_version(specs, self._rng)
        model = routes.models[(name, spec.version)]
        table = records_to_table(records, spec.input_columns, routes.max_rows)
        # onnxruntime runs inline on the event loop: for the small graphs co-located here a run takes
        # microseconds, less than a thread-pool hand-off would.
        probabilities = model.predict_table(table)
        prediction_id = uuid.uuid4().hex
        body = {
            "model_name": name,
            "model_version": spec.version,
            "prediction_id": prediction_id,
            "predictions": [
                {"probability": float(p), "label": int(p >= spec.threshold)} for p in probabilities
            ],
        }
        headers = {
            "model-name": name,
            "model-version": spec.version,
            "data-version": spec.data_version,
            "prediction-id": prediction_id,
        }
        return JSONResponse(body, headers=headers)

    @app.get("/v1/models")
    async def list_models(self) -> dict[str, Any]:
        """The names and versions served, with their input columns and this replica's identity."""
        routes = self._routes
        context = serve.get_replica_context()
        return {
            "models": [
                {
                    "name": s.name,
                    "version": s.version,
                    "data_version": s.data_version,
                    "weight": s.weight,
                    "threshold": s.threshold,
                    "input_columns": dict(s.input_columns),
                }
                for specs in routes.specs.values()
                for s in specs
            ],
            "replica": {
                "id": context.replica_id.unique_id,
                "pid": os.getpid(),
                "config_generation": self._generation,
            },
        }

    @app.get("/v2/health/live")
    async def live(self) -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready(self) -> Any:
        if not self._routes.models:
            return _error(503, "no model loaded: deploy at least one ModelSpec.")
        return {"ready": True}
