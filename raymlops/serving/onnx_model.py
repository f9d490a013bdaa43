"""One served model version: an onnxruntime session over the composed graph, checked against its spec.

It scores validated requests (``ModelInputs``, which the serving protocols build and check before
onnxruntime sees anything) and tables; a non-finite answer is a failure of the version, never JSON.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import DeploymentError
from raymlops.models.export import onnx_feeds, providers_for
from raymlops.serving.model_inputs import ModelInputs
from raymlops.serving.providers import check_providers
from raymlops.serving.spec import ModelSpec
from raymlops.tasks.base import OutputSpec

__all__ = ["LoadedModel"]

logger = logging.getLogger(__name__)

# onnxruntime element types per wire kind, to check a graph against its spec at load time.
_ORT_TYPES = {"float": "tensor(float)", "string": "tensor(string)"}


def _fits(shape: list[Any], width: int) -> bool:
    """Whether an output's declared shape can hold the task's: [N] or [N, 1] for one value per row,
    [N, K] for K classes; a symbolic or undeclared dimension passes (onnxruntime checks it per run)."""
    if not shape:  # no declared rank
        return True
    rest = shape[1:]
    if width == 1:
        return all(d == 1 or not isinstance(d, int) for d in rest) and len(rest) <= 1
    return len(rest) == 1 and (rest[0] == width or not isinstance(rest[0], int))


class LoadedModel:
    """An onnxruntime session for one ``ModelSpec``, checked against the spec when loaded."""

    def __init__(
        self, spec: ModelSpec, *, use_gpu: bool = False, audit_log: str | os.PathLike[str] | None = None
    ) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.use_gpu = use_gpu
        options = ort.SessionOptions()
        # One thread per session: several replicas and versions share few cores, and small batches
        # gain nothing from intra-op parallelism while thread wake-ups cost latency.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        from raymlops.security.integrity import read_artifact

        # The bytes are read (and decrypted) once, checked against the registered digest, and only
        # then handed to onnxruntime: a tampered graph raises IntegrityError before any session exists.
        try:
            graph = read_artifact(
                spec.onnx_path,
                digest=spec.digest or None,
                what=f"{spec.name} v{spec.version}",
                audit_log=audit_log,
            )
        except OSError as exc:
            raise DeploymentError(
                f"Cannot read ONNX model {spec.name!r} version {spec.version!r} from {spec.onnx_path}: {exc}"
            ) from exc
        try:
            self.session = ort.InferenceSession(graph, sess_options=options, providers=providers_for(use_gpu))
        except Exception as exc:
            raise DeploymentError(
                f"Cannot load ONNX model {spec.name!r} version {spec.version!r} from {spec.onnx_path}: {exc}"
            ) from exc
        # Asked for CUDA and running on CPU (onnxruntime falls back silently): refused, naming the option.
        check_providers(self.session, use_gpu, "serve.use_gpu", f"{spec.name} v{spec.version}")
        self._check_signature()
        logger.info(
            "model loaded name=%s version=%s providers=%s",
            spec.name,
            spec.version,
            self.session.get_providers(),
        )

    def _check_signature(self) -> None:
        """Fail at load time, not on the first request, when the graph and the spec disagree."""
        graph_inputs = {i.name: i.type for i in self.session.get_inputs()}
        expected = {name: _ORT_TYPES[kind] for name, kind in self.spec.input_columns.items()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        name, width = self.output.name, self.output.width
        if graph_inputs != expected or name not in outputs:
            raise DeploymentError(
                f"ONNX model {self.spec.name!r} version {self.spec.version!r} does not match its spec: "
                f"graph inputs {graph_inputs} and outputs {sorted(outputs)}; spec expects inputs {expected} "
                f"and an output {name!r} (its task {self.spec.task_obj.name!r})."
            )
        if not _fits(outputs[name], width):
            raise DeploymentError(
                f"ONNX model {self.spec.name!r} version {self.spec.version!r}: output {name!r} has shape "
                f"{outputs[name]}, but its task {self.spec.task_obj.name!r} answers "
                f"{'[N]' if width == 1 else f'[N, {width}]'}; register the graph its task exports."
            )

    @property
    def output(self) -> OutputSpec:
        """The graph output the version's task answers from (its name and width per row)."""
        return self.spec.task_obj.output()

    def can_reuse_for(self, spec: ModelSpec, *, use_gpu: bool) -> bool:
        """Whether this session can serve ``spec`` (only weight, threshold or data version differ)."""
        return (
            spec.name,
            spec.version,
            spec.onnx_path,
            spec.digest,
            spec.input_columns,
            spec.task,
            use_gpu,
        ) == (
            self.spec.name,
            self.spec.version,
            self.spec.onnx_path,
            self.spec.digest,
            self.spec.input_columns,
            self.spec.task,
            self.use_gpu,
        )

    def with_spec(self, spec: ModelSpec) -> LoadedModel:
        """The same session under an updated spec; a routing change must not reload the graph."""
        clone = copy.copy(self)
        clone.spec = spec
        return clone

    def predict_inputs(self, inputs: ModelInputs) -> np.ndarray:
        """The task's prediction (float32 [N], or [N, K] for K classes) for a validated request."""
        return self.run_feeds(inputs.feeds())

    async def apredict(self, inputs: ModelInputs) -> np.ndarray:
        """``predict_inputs`` with the face of a ``RemoteModel``: onnxruntime runs inline on the event
        loop, since for the small graphs co-located in the router a run takes less than a thread hop."""
        return self.run_feeds(inputs.feeds())

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """The task's prediction (float32 [N] or [N, K]) for a table holding the spec's input columns."""
        return self.run_feeds(onnx_feeds(table, self.spec.input_columns))

    def predict(self, records: list[dict[str, Any]], *, max_rows: int = 10_000) -> list[Any]:
        """Validate ``records`` and return one prediction per record: a number (a probability, a value),
        or the class probabilities as a list."""
        from raymlops.serving.protocols.v1 import records_to_inputs

        inputs = records_to_inputs(records, self.spec.input_columns, max_rows)
        return self.predict_inputs(inputs).astype(np.float64).tolist()

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The task's prediction for the graph's feeds (``ModelInputs.feeds``, ``onnx_feeds``): float32
        [N] when the task's output has one value per row, [N, K] for K classes."""
        name, width = self.output.name, self.output.width
        result = np.asarray(self.session.run([name], feeds)[0], dtype=np.float32)
        pred = result.reshape(-1) if width == 1 else result.reshape(-1, width)
        bad = np.flatnonzero(~np.isfinite(pred).reshape(len(pred), -1).all(axis=1))
        if bad.size:
            # Inputs in float32 range can still overflow inside a graph; a NaN answer is no answer
            # (nor valid JSON): the version failed on this request, and the router says so.
            raise FloatingPointError(
                f"model {self.spec.name!r} version {self.spec.version!r} returned a non-finite "
                f"{name} ({pred[bad[0]]}) for row {bad[0]}."
            )
        return pred
