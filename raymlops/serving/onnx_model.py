"""One served model version: an onnxruntime session over the composed graph, plus request validation.

Validation happens here, before onnxruntime sees anything, so every malformed request is answered
with a 422 that names the row and column instead of an onnxruntime error (or a 500).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import DeploymentError, RequestError
from raymlops.models.export import PROBABILITY_OUTPUT, onnx_feeds, providers_for
from raymlops.serving.spec import ModelSpec

__all__ = ["LoadedModel", "parse_records", "records_to_table"]

logger = logging.getLogger(__name__)

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# onnxruntime element types per wire kind, to check a graph against its spec at load time.
_ORT_TYPES = {"float": "tensor(float)", "string": "tensor(string)"}


def _describe(value: Any) -> str:
    """Short, safe rendering of an offending value for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def records_to_table(records: Any, input_columns: Mapping[str, str], max_rows: int) -> pa.Table:
    """Check request records against the model's raw columns and build the input table.

    Args:
        records: The decoded ``records`` of a request; must be a non-empty list of JSON objects.
        input_columns: Raw column -> ``"float"`` or ``"string"``.
        max_rows: Most records one request may carry.

    Returns:
        A table with exactly ``input_columns`` (float64 / string; nulls kept), in that order.
        Extra keys in the records are ignored.

    Raises:
        RequestError: (422) naming the first problem found: its row index, column and value.
    """
    if not isinstance(records, list):
        raise RequestError(f"records must be a list of JSON objects, got {type(records).__name__}.")
    if not records:
        raise RequestError("records is empty: send at least one record.")
    if len(records) > max_rows:
        raise RequestError(
            f"too many records: {len(records)} exceeds the limit of {max_rows} per request; "
            "split the request."
        )
    columns: dict[str, list[Any]] = {name: [] for name in input_columns}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestError(f"record {index} must be a JSON object, got {_describe(record)}.")
        missing = [name for name in input_columns if name not in record]
        if missing:
            raise RequestError(
                f"record {index} is missing column(s) {', '.join(map(repr, missing))}; "
                f"required columns: {', '.join(input_columns)}."
            )
        for name, kind in input_columns.items():
            value = record[name]
            if value is not None:
                if kind == "float":
                    _check_number(value, index, name)
                elif not isinstance(value, str):
                    raise RequestError(
                        f"record {index} column {name!r} must be a string or null, got {_describe(value)}."
                    )
            columns[name].append(value)
    return pa.table(
        {
            name: pa.array(values, type=pa.float64() if input_columns[name] == "float" else pa.string())
            for name, values in columns.items()
        }
    )


def parse_records(body: bytes) -> Any:
    """The records of a predict body: ``{"records": [...]}`` or a bare JSON list.

    The raw body is parsed here (not by FastAPI) so that clients that send no Content-Type header,
    such as tritonclient, are accepted.
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RequestError(f"request body is not valid JSON: {exc}", status=400) from None
    if isinstance(payload, dict):
        if "records" not in payload:
            keys = ", ".join(map(repr, list(payload)[:5])) or "none"
            raise RequestError(
                f'request body must be {{"records": [...]}} or a JSON list of records; '
                f"got an object with keys {keys}."
            )
        return payload["records"]
    if isinstance(payload, list):
        return payload
    raise RequestError(
        f'request body must be {{"records": [...]}} or a JSON list of records; '
        f"got a JSON {type(payload).__name__}."
    )


def _check_number(value: Any, index: int, name: str) -> None:
    # bool is an int in Python but almost always a client bug for a numeric feature.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(
            f"record {index} column {name!r} must be a number or null, got {_describe(value)}."
        )
    # The graph computes in float32: anything beyond its range (or NaN/inf, which Python's json accepts)
    # would silently become inf/NaN. null is the way to send a missing value (it is imputed).
    try:
        ok = math.isfinite(float(value)) and abs(float(value)) <= _FLOAT32_MAX
    except OverflowError:  # a huge JSON integer
        ok = False
    if not ok:
        raise RequestError(
            f"record {index} column {name!r} must be a finite float32 number, "
            f"got {_describe(value)}; send null for a missing value."
        )


class LoadedModel:
    """An onnxruntime session for one ``ModelSpec``, checked against the spec when loaded."""

    def __init__(self, spec: ModelSpec, *, use_gpu: bool = False) -> None:
        import onnxruntime as ort

        self.spec = spec
        self.use_gpu = use_gpu
        options = ort.SessionOptions()
        # One thread per session: several replicas and versions share few cores, and small batches
        # gain nothing from intra-op parallelism while thread wake-ups cost latency.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                spec.onnx_path, sess_options=options, providers=providers_for(use_gpu)
            )
        except Exception as exc:
            raise DeploymentError(
                f"Cannot load ONNX model {spec.name!r} version {spec.version!r} from {spec.onnx_path}: {exc}"
            ) from exc
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
        outputs = [o.name for o in self.session.get_outputs()]
        if graph_inputs != expected or PROBABILITY_OUTPUT not in outputs:
            raise DeploymentError(
                f"ONNX model {self.spec.name!r} version {self.spec.version!r} does not match its spec: "
                f"graph inputs {graph_inputs} and outputs {outputs}; spec expects inputs {expected} "
                f"and an output {PROBABILITY_OUTPUT!r}."
            )

    def can_reuse_for(self, spec: ModelSpec, *, use_gpu: bool) -> bool:
        """Whether this session can serve ``spec`` (only weight, threshold or data version differ)."""
        return (spec.name, spec.version, spec.onnx_path, spec.input_columns, use_gpu) == (
            self.spec.name,
            self.spec.version,
            self.spec.onnx_path,
            self.spec.input_columns,
            self.use_gpu,
        )

    def with_spec(self, spec: ModelSpec) -> LoadedModel:
        """The same session under an updated spec; a routing change must not reload the graph."""
        clone = copy.copy(self)
        clone.spec = spec
        return clone

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """Probabilities (float32 [N]) for a table holding the spec's input columns."""
        feeds = onnx_feeds(table, self.spec.input_columns)
        result = self.session.run([PROBABILITY_OUTPUT], feeds)[0]
        return np.asarray(result, dtype=np.float32).reshape(-1)

    def predict(self, records: list[dict[str, Any]], *, max_rows: int = 10_000) -> list[float]:
        """Validate ``records`` and return one probability per record."""
        table = records_to_table(records, self.spec.input_columns, max_rows)
        return [float(p) for p in self.predict_table(table)]
