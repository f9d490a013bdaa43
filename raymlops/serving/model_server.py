"""``placement: deployment``: a model version in its own Serve deployment, behind a ``DeploymentHandle``.

A co-located version (the default) is an onnxruntime session inside every router replica: no hop,
but every router replica holds a copy of the graph. A version too large for that runs here, in
``ModelServer`` replicas sized for it, and the router calls it through a handle (about 3.8 ms p50 a
hop on this machine, RAY-NOTES). ``@serve.batch`` folds the concurrent requests of all router
replicas into one onnxruntime run, which wins that hop back under load.

The router sees a ``RemoteModel``: the same face as ``LoadedModel`` (``spec``, ``predict_inputs``,
``apredict``), so routing, fallback, shadowing and statistics do not care where a version runs.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray import serve

from raymlops.serving.app_logging import LOGGING_CONFIG
from raymlops.serving.model_inputs import ModelInputs
from raymlops.serving.onnx_model import LoadedModel
from raymlops.serving.spec import ModelSpec, node_local

__all__ = ["MAX_ONGOING_REQUESTS", "ModelServer", "RemoteModel", "deployment_name", "remote_specs"]

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

# Requests a router or model replica takes at once (Serve's ``max_ongoing_requests``, default 5).
# Beyond it Serve's proxy (or a handle) does not queue a request for the replica: it re-polls the
# replicas with a back-off of 25 ms doubling to 0.5 s, idle time while the replica may already be
# free. Measured on 2 cores (benchmarks/router.py): at 5, 16 requests in flight were served at half
# the rate of 4 (bare Serve too); at 64 the rate at 16 is at least that at 4. Our handlers are async
# and short, so a replica holding more requests only queues them on its own event loop.
MAX_ONGOING_REQUESTS = 64


def deployment_name(spec: ModelSpec) -> str:
    """The Serve deployment that hosts ``spec`` (unique per model name and version within an app)."""
    return f"model-{_UNSAFE.sub('_', spec.name)}-v{_UNSAFE.sub('_', spec.version)}"


def remote_specs(user_config: Mapping[str, Any]) -> list[ModelSpec]:
    """The versions of a router ``user_config`` that run in their own deployment."""
    return [
        ModelSpec.from_dict(raw)
        for versions in user_config.get("models", {}).values()
        for raw in versions
        if raw.get("placement") == "deployment"
    ]


def _split(feeds: list[dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], list[int]]:
    """One feed dict from many requests' (concatenated row-wise) and each request's row count."""
    sizes = [len(next(iter(f.values()))) for f in feeds]
    merged = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    return merged, sizes


@serve.deployment(
    ray_actor_options={"num_cpus": 0.25},
    logging_config=LOGGING_CONFIG,
    max_ongoing_requests=MAX_ONGOING_REQUESTS,
)
class ModelServer:
    """One model version's onnxruntime session; its ``user_config`` is
    ``{"spec": ModelSpec.to_dict(), "use_gpu": bool, "max_batch_size": int, "batch_wait_us": int}``."""

    def __init__(self) -> None:
        self._model: LoadedModel | None = None

    def reconfigure(self, user_config: Mapping[str, Any]) -> None:
        spec = node_local(ModelSpec.from_dict(user_config["spec"]))
        use_gpu = bool(user_config.get("use_gpu", False))
        if self._model is None or not self._model.can_reuse_for(spec, use_gpu=use_gpu):
            self._model = LoadedModel(spec, use_gpu=use_gpu)
        else:
            self._model = self._model.with_spec(spec)
        batched: Any = self.predict  # serve.batch adds the setters; its typing does not say so
        batched.set_max_batch_size(int(user_config["max_batch_size"]))
        batched.set_batch_wait_timeout_s(int(user_config["batch_wait_us"]) / 1e6)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.001)
    async def predict(self, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray | Exception]:
        """Predictions per request ([N] or [N, K], the task's), from one onnxruntime run over the batch.

        A batch that fails is re-run request by request, so that one bad request (a row the graph
        cannot score) fails alone and not the requests that happened to share its batch.
        """
        model = self._model
        assert model is not None, "reconfigure() runs before the first request"
        merged, sizes = _split(feeds)
        try:
            probabilities = model.run_feeds(merged)
        except Exception:
            return [_run_alone(model, f) for f in feeds]
        return list(np.split(probabilities, np.cumsum(sizes)[:-1]))

    def check_health(self) -> None:
        if self._model is None:
            raise RuntimeError("no model loaded yet")


def _run_alone(model: LoadedModel, feeds: dict[str, np.ndarray]) -> np.ndarray | Exception:
    try:
        return model.run_feeds(feeds)
    except Exception as exc:  # handed to that request's caller, who raises it
        return exc


class RemoteModel:
    """The router's view of a version hosted by a ``ModelServer`` deployment."""

    def __init__(self, spec: ModelSpec, handle: Any, *, use_gpu: bool) -> None:
        self.spec = spec
        self.use_gpu = use_gpu
        self._handle = handle

    def can_reuse_for(self, spec: ModelSpec, *, use_gpu: bool) -> bool:
        return spec.placement == "deployment" and (
            spec.name,
            spec.version,
            spec.onnx_path,
            spec.task,
            use_gpu,
        ) == (self.spec.name, self.spec.version, self.spec.onnx_path, self.spec.task, self.use_gpu)

    def with_spec(self, spec: ModelSpec) -> RemoteModel:
        clone = copy.copy(self)
        clone.spec = spec
        return clone

    async def apredict(self, inputs: ModelInputs) -> np.ndarray:
        """The task's prediction (float32 [N] or [N, K]); the model's own failure is raised here, as
        in-replica."""
        return _raise_failure(await self._handle.predict.remote(inputs.feeds()))

    def predict_inputs(self, inputs: ModelInputs) -> np.ndarray:
        """Blocking form, for threads off the router's event loop (shadow calls)."""
        return _raise_failure(self._handle.predict.remote(inputs.feeds()).result())


def _raise_failure(result: np.ndarray | Exception) -> np.ndarray:
    if isinstance(result, Exception):
        raise result
    return result
