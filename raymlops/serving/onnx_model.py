"""One served model version: an onnxruntime session over the composed graph, plus request validation.

Validation happens here, before onnxruntime sees anything, so every malformed request is answered
with a 422 that names the row and column instead of an onnxruntime error (or a 500). A validated
request is a ``ModelInputs``: the graph's feeds are built from it directly (no Arrow table on the
request path); the table, for the prediction log and explainers, only when one is asked for.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import DeploymentError, RequestError
from raymlops.models.export import PROBABILITY_OUTPUT, onnx_feeds, providers_for
from raymlops.serving.spec import ModelSpec

__all__ = [
    "RECORDS_SCHEMA",
    "LoadedModel",
    "ModelInputs",
    "check_text",
    "describe",
    "parse_records",
    "records_to_inputs",
    "records_to_table",
]

logger = logging.getLogger(__name__)

FLOAT32_MAX = float(np.finfo(np.float32).max)
# onnxruntime element types per wire kind, to check a graph against its spec at load time.
_ORT_TYPES = {"float": "tensor(float)", "string": "tensor(string)"}

# JSON Schema of a predict / explain body, for the OpenAPI document (the handler parses the raw body).
_RECORD_SCHEMA = {
    "type": "object",
    "description": "One row: raw input column -> value; null is a missing value; other keys are ignored.",
    "additionalProperties": {"type": ["number", "string", "null"]},
}
RECORDS_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "required": ["records"],
            "properties": {"records": {"type": "array", "minItems": 1, "items": _RECORD_SCHEMA}},
        },
        {"type": "array", "minItems": 1, "items": _RECORD_SCHEMA},
    ],
}


def describe(value: Any) -> str:
    """Short, safe rendering of an offending value for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def check_text(value: str, where: str) -> str:
    """``value`` if it can be encoded as UTF-8, else a 422: JSON's ``\\ud800`` escapes decode to lone
    surrogates, which Arrow, onnxruntime and the JSON answer all refuse."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                f"{where} must be valid Unicode text, got {describe(value)} (a lone surrogate escape)."
            ) from None
    return value


@dataclass(frozen=True)
class ModelInputs:
    """A request's raw input columns, validated, in the spec's order: what a version scores.

    Numeric columns are float64 arrays, NaN being a missing value (the graph imputes it); string
    columns are lists, None being a missing value.
    """

    kinds: Mapping[str, str]  # raw column -> "float" | "string" (the spec's input_columns)
    columns: Mapping[str, Any]  # raw column -> np.ndarray (float) | list[str | None] (string)
    rows: int
    # How ``table()`` writes a missing number: null where every NaN stands for one (/v1 refuses NaN),
    # NaN where the client may send NaN itself (/v2), as it was sent.
    nan_is_null: bool = True

    def feeds(self) -> dict[str, np.ndarray]:
        """The graph's inputs, as ``onnx_feeds`` makes them from a table: float32 [N, 1] (missing ->
        NaN) or object [N, 1] (missing -> '')."""
        feeds = {}
        for name, values in self.columns.items():
            if self.kinds[name] == "float":
                feeds[name] = values.astype(np.float32).reshape(-1, 1)
            else:
                feeds[name] = np.array(["" if v is None else v for v in values], dtype=object).reshape(-1, 1)
        return feeds

    def table(self) -> pa.Table:
        """The columns as float64 / string with nulls (missing numbers: see ``nan_is_null``), for the
        prediction log and explainers."""
        return pa.table(
            {
                name: pa.array(values, type=pa.float64(), from_pandas=self.nan_is_null)
                if self.kinds[name] == "float"
                else pa.array(values, type=pa.string())
                for name, values in self.columns.items()
            }
        )


def records_to_inputs(records: Any, input_columns: Mapping[str, str], max_rows: int) -> ModelInputs:
    """Check request records against the model's raw columns and collect its inputs.

    Args:
        records: The decoded ``records`` of a request; must be a non-empty list of JSON objects.
        input_columns: Raw column -> ``"float"`` or ``"string"``.
        max_rows: Most records one request may carry.

    Returns:
        The inputs, with exactly ``input_columns`` in that order. Extra keys in the records are ignored.

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
    cells = [(name, kind == "float", columns[name].append) for name, kind in input_columns.items()]
    required = frozenset(input_columns)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise RequestError(f"record {index} must be a JSON object, got {describe(record)}.")
        if not record.keys() >= required:
            missing = [name for name in input_columns if name not in record]
            raise RequestError(
                f"record {index} is missing column(s) {', '.join(map(repr, missing))}; "
                f"required columns: {', '.join(input_columns)}."
            )
        for name, numeric, append in cells:
            value = record[name]
            if numeric:
                append(np.nan if value is None else _number(value, index, name))
            elif value is None or (type(value) is str and value.isascii()):  # no message to build
                append(value)
            elif isinstance(value, str):
                append(check_text(value, f"record {index} column {name!r}"))
            else:
                raise RequestError(
                    f"record {index} column {name!r} must be a string or null, got {describe(value)}."
                )
    return ModelInputs(
        input_columns,
        {
            name: np.array(values, dtype=np.float64) if input_columns[name] == "float" else values
            for name, values in columns.items()
        },
        len(records),
    )


def records_to_table(records: Any, input_columns: Mapping[str, str], max_rows: int) -> pa.Table:
    """``records_to_inputs`` as a table: float64 / string columns, nulls kept, in ``input_columns`` order."""
    return records_to_inputs(records, input_columns, max_rows).table()


def _number(value: Any, index: int, name: str) -> Any:
    """A numeric cell as it is, or the 422 that says why the graph cannot take it."""
    # bool is an int in Python but almost always a client bug for a numeric feature. (A float, the
    # common case, is let through by its exact type first: this runs once per cell.)
    if type(value) is not float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise RequestError(f"record {index} column {name!r} must be a number or null, got {describe(value)}.")
    # The graph computes in float32: anything beyond its range (or NaN/inf, which Python's json accepts)
    # would silently become inf/NaN. null is the way to send a missing value (it is imputed). Python
    # compares a huge JSON integer with a float exactly, without overflowing; NaN compares False.
    if not -FLOAT32_MAX <= value <= FLOAT32_MAX:
        raise RequestError(
            f"record {index} column {name!r} must be a finite float32 number, "
            f"got {describe(value)}; send null for a missing value."
        )
    return value


def parse_records(body: bytes) -> Any:
    """The records of a predict body: ``{"records": [...]}`` or a bare JSON list.

    The raw body is parsed here (not by FastAPI) so that clients that send no Content-Type header,
    such as tritonclient, are accepted.
    """
    try:
        payload = json.loads(body)
    # ValueError: also an integer of more than 4300 digits (Python's int-from-string limit).
    except (ValueError, RecursionError) as exc:
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
        return (spec.name, spec.version, spec.onnx_path, spec.digest, spec.input_columns, use_gpu) == (
            self.spec.name,
            self.spec.version,
            self.spec.onnx_path,
            self.spec.digest,
            self.spec.input_columns,
            self.use_gpu,
        )

    def with_spec(self, spec: ModelSpec) -> LoadedModel:
        """The same session under an updated spec; a routing change must not reload the graph."""
        clone = copy.copy(self)
        clone.spec = spec
        return clone

    def predict_inputs(self, inputs: ModelInputs) -> np.ndarray:
        """Probabilities (float32 [N]) for a validated request."""
        return self.run_feeds(inputs.feeds())

    async def apredict(self, inputs: ModelInputs) -> np.ndarray:
        """``predict_inputs`` with the face of a ``RemoteModel``: onnxruntime runs inline on the event
        loop, since for the small graphs co-located in the router a run takes less than a thread hop."""
        return self.run_feeds(inputs.feeds())

    def predict_table(self, table: pa.Table) -> np.ndarray:
        """Probabilities (float32 [N]) for a table holding the spec's input columns."""
        return self.run_feeds(onnx_feeds(table, self.spec.input_columns))

    def predict(self, records: list[dict[str, Any]], *, max_rows: int = 10_000) -> list[float]:
        """Validate ``records`` and return one probability per record."""
        inputs = records_to_inputs(records, self.spec.input_columns, max_rows)
        return [float(p) for p in self.predict_inputs(inputs)]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities (float32 [N]) for the graph's feeds (``ModelInputs.feeds``, ``onnx_feeds``)."""
        result = self.session.run([PROBABILITY_OUTPUT], feeds)[0]
        probabilities = np.asarray(result, dtype=np.float32).reshape(-1)
        bad = np.flatnonzero(~np.isfinite(probabilities))
        if bad.size:
            # Inputs in float32 range can still overflow inside a graph; a NaN answer is no answer
            # (nor valid JSON): the version failed on this request, and the router says so.
            raise FloatingPointError(
                f"model {self.spec.name!r} version {self.spec.version!r} returned a non-finite "
                f"probability ({probabilities[bad[0]]}) for row {bad[0]}."
            )
        return probabilities
