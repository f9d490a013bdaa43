"""Open Inference Protocol v2 (KServe / Triton HTTP/REST): the ``OipV2`` serving protocol, request
parsing and response shapes.

Pure functions, no Ray: the router's ``/v2`` endpoints call them. What a served model looks like in
the protocol: one input tensor per raw column, ``FP32`` (numeric columns) or ``BYTES`` (string
columns), shape ``[-1, 1]``; one ``FP32`` output, the version's task's (``Task.output``): ``probability``
``[-1]`` (binary), ``probabilities`` ``[-1, K]`` (multiclass; the class names, in column order, in the
output's ``parameters``), ``value`` ``[-1]`` (regression).

Accepted on input:

- JSON ``inputs`` with ``data`` flat or nested to the shape, shape ``[N]`` or ``[N, 1]``; numeric
  datatypes ``FP16/FP32/FP64``, ``INT8..INT64``, ``UINT8..UINT64`` for numeric columns, ``BYTES``
  (strings) for string columns. ``null`` (and, for numeric tensors, NaN) is a missing value, which the
  graph imputes as in training. Inputs the model does not use are ignored.
- The binary tensor extension that ``tritonclient`` uses by default: a JSON header of
  ``Inference-Header-Content-Length`` bytes followed by the tensors' raw bytes (``binary_data_size``
  per input; little-endian numbers, BYTES as 4-byte length + UTF-8).
- No Content-Type header: callers hand over the raw body.

Malformed framing or JSON answers 400, a well-formed request the model cannot take answers 422
(``RequestError``), with a message naming the input, element and constraint.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import pyarrow as pa

from raymlops.errors import RequestError
from raymlops.serving.model_inputs import FLOAT32_MAX, ModelInputs, check_text, describe
from raymlops.serving.policy import sticky_key_from_fields
from raymlops.serving.protocols.base import OPEN, ServingProtocol
from raymlops.serving.protocols.v1 import COLUMNS_SCHEMA

if TYPE_CHECKING:
    from raymlops.serving.spec import ModelSpec

__all__ = [
    "HEADER_LENGTH",
    "INFER_ANSWER",
    "INFER_REQUEST_SCHEMA",
    "InferRequest",
    "OipV2",
    "Tensor",
    "check_outputs",
    "infer_inputs",
    "infer_response",
    "infer_table",
    "model_metadata",
    "parse_infer_request",
    "server_metadata",
    "sticky_key",
]

HEADER_LENGTH = "inference-header-content-length"
OUTPUT_NAME = "probability"  # the legacy binary task's output
KIND_DATATYPE = {"float": "FP32", "string": "BYTES"}
# Wire datatype -> little-endian numpy dtype of its binary form.
NUMERIC_DATATYPES = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
DATATYPES = (*NUMERIC_DATATYPES, "BYTES")

# JSON Schema of an inference request, for the OpenAPI document (the handler parses the raw body).
INFER_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "datatype": {"enum": list(DATATYPES)},
                    "shape": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 2,
                        "items": {"type": "integer", "minimum": 0},
                    },
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                    },
                    "data": {
                        "type": "array",
                        "description": "Row-major elements, flat or nested to the shape; null is missing.",
                        "items": {
                            "anyOf": [
                                {"type": ["number", "string", "null"]},
                                {"type": "array", "items": {"type": ["number", "string", "null"]}},
                            ]
                        },
                    },
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "description": "The version's one output."}},
            },
        },
    },
}

INFER_ANSWER = {
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
                "imputed": {"type": "array", "items": COLUMNS_SCHEMA},
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
                    "name": {"enum": ["probability", "probabilities", "value"]},
                    "datatype": {"const": "FP32"},
                    "shape": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
                    "data": {"type": "array", "items": {"type": "number"}, "description": "Row-major."},
                    "parameters": {
                        "type": "object",
                        "description": "The task's output parameters (Task.oip_parameters): multiclass "
                        '"classes", a JSON array of the class names in column order.',
                        "additionalProperties": {"type": ["string", "number", "boolean"]},
                    },
                },
            },
        },
    },
}


@dataclass(frozen=True)
class Tensor:
    """One input tensor, flattened: ``values`` has one element per row (a list, or an array if binary)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any] | np.ndarray


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request: the tensors by name, all with the same number of rows."""

    id: str | None
    inputs: dict[str, Tensor]
    rows: int
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()  # the outputs asked for by name (checked against the version's)


def server_metadata(version: str) -> dict[str, Any]:
    """``GET /v2``."""
    return {"name": "raymlops", "version": version, "extensions": ["binary_tensor_data"]}


def model_metadata(name: str, specs: Sequence[ModelSpec], version: ModelSpec | None = None) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{version}]``.

    The tensors shown for a name are those of the version taking the largest weight (the champion):
    versions of one name may differ in their inputs. A version with a feature lookup takes the
    columns a request carries (entity keys instead of the features the router fetches).
    """
    spec = version or max(specs, key=lambda s: s.weight)
    output = spec.task_obj.output()
    return {
        "name": name,
        "versions": [spec.version] if version is not None else [s.version for s in specs],
        "platform": "onnx",
        "inputs": [
            {"name": column, "datatype": KIND_DATATYPE[kind], "shape": [-1, 1]}
            for column, kind in spec.request_columns.items()
        ],
        "outputs": [
            {
                "name": output.name,
                "datatype": "FP32",
                "shape": [-1] if output.width == 1 else [-1, output.width],
            }
        ],
    }


def infer_response(
    name: str,
    version: str,
    request_id: str | None,
    prediction_id: str,
    pred: np.ndarray,
    output: str = OUTPUT_NAME,
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON answer of ``POST /v2/models/{name}/infer``; ``id`` echoes the request's, else the
    prediction id. ``pred``: the task's prediction, [N] or [N, K] (sent row-major, flat);
    ``parameters``: the output's (the task's ``oip_parameters``), left out when empty."""
    tensor: dict[str, Any] = {
        "name": output,
        "datatype": "FP32",
        "shape": [int(n) for n in pred.shape],
        "data": pred.reshape(-1).tolist(),
    }
    if parameters:
        tensor["parameters"] = dict(parameters)
    return {
        "id": request_id if request_id is not None else prediction_id,
        "model_name": name,
        "model_version": version,
        "parameters": {"prediction_id": prediction_id},
        "outputs": [tensor],
    }


def ood_parameters(flags: list[list[str]]) -> dict[str, Any]:
    """Out-of-distribution flags as response ``parameters``, which OIP allows to be strings, numbers or
    booleans only: ``ood_rows`` counts the flagged rows; ``ood`` is a JSON array with, per row, the
    columns outside the training profile (``[]`` for a row within it)."""
    return {
        "ood_rows": sum(1 for columns in flags if columns),
        "ood": json.dumps(flags, separators=(",", ":")),
    }


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Parse an inference request body (JSON, or JSON header + binary tensors).

    Args:
        body: The raw request body.
        header_length: The ``Inference-Header-Content-Length`` header, when the client sent binary
            tensor data after the JSON.

    Raises:
        RequestError: 400 for unreadable JSON or binary framing, 422 for a request that breaks the
            protocol (no inputs, a shape that does not match the data, rows that differ, ...).
    """
    binary = b""
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            length = -1
        if not 0 <= length <= len(body):
            raise RequestError(
                f"Inference-Header-Content-Length {header_length!r} must be an integer between 0 and "
                f"the body size {len(body)}.",
                status=400,
            )
        body, binary = body[:length], body[length:]
    try:
        payload = json.loads(body)
    # ValueError: also an integer of more than 4300 digits (Python's int-from-string limit).
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"inference request is not valid JSON: {exc}", status=400) from None
    if not isinstance(payload, dict):
        raise RequestError(f"inference request must be a JSON object, got a JSON {type(payload).__name__}.")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"'id' must be a string, got {describe(request_id)}.")
    if request_id is not None:
        check_text(request_id, "'id'")  # echoed in the answer
    parameters = payload.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError(f"'parameters' must be a JSON object, got {describe(parameters)}.")
    outputs = _check_outputs(payload.get("outputs"))
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError(
            f"'inputs' must be a non-empty list of tensors, got {describe(raw_inputs)}; "
            'each tensor is {"name", "datatype", "shape", "data"}.'
        )
    inputs: dict[str, Tensor] = {}
    offset = 0
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _parse_tensor(index, raw, binary, offset)
        if tensor.name in inputs:
            raise RequestError(f"input {tensor.name!r} is given twice.")
        inputs[tensor.name] = tensor
    if offset != len(binary):
        raise RequestError(
            f"the body carries {len(binary)} bytes of binary tensor data but the inputs' "
            f"binary_data_size add up to {offset}.",
            status=400,
        )
    rows = {t.shape[0] for t in inputs.values()}
    if len(rows) > 1:
        sizes = ", ".join(f"{t.name!r}: {t.shape[0]}" for t in inputs.values())
        raise RequestError(f"inputs must all have the same number of rows; got {sizes}.")
    return InferRequest(request_id, inputs, rows.pop(), parameters, outputs)


def _check_outputs(outputs: Any) -> tuple[str, ...]:
    """The output names asked for; which the version has is checked once it is chosen
    (``check_outputs``)."""
    if outputs is None:
        return ()
    if not isinstance(outputs, list):
        raise RequestError(f"'outputs' must be a list, got {describe(outputs)}.")
    names = []
    for output in outputs:
        name = output.get("name") if isinstance(output, dict) else None
        if not isinstance(name, str):
            raise RequestError(f'unknown output {name!r}; each output asked for is {{"name": NAME}}.')
        names.append(check_text(name, "an output's name"))
    return tuple(names)


def check_outputs(request: InferRequest, spec: ModelSpec) -> None:
    """Refuse (422) outputs the version does not have: it has one, its task's."""
    output = spec.task_obj.output().name
    for name in request.outputs:
        if name != output:
            raise RequestError(f"unknown output {name!r}; this model has one output, {output!r}.")


def _parse_tensor(index: int, raw: Any, binary: bytes, offset: int) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise RequestError(f"inputs[{index}] must be a JSON object, got {describe(raw)}.")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(f"inputs[{index}].name must be a non-empty string, got {describe(name)}.")
    datatype = raw.get("datatype")
    if datatype not in DATATYPES:
        raise RequestError(
            f"input {name!r}: datatype {datatype!r} is not supported; use one of {', '.join(DATATYPES)}."
        )
    shape = raw.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise RequestError(f"input {name!r}: shape must be [N] or [N, 1] with N >= 1, got {shape!r}.")
    rows = shape[0]
    if rows < 1:
        raise RequestError(f"input {name!r} has no rows (shape {shape!r}); send at least one.")
    parameters = raw.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        if "data" in raw:
            raise RequestError(f"input {name!r} has both 'data' and binary_data_size; send one.")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise RequestError(
                f"input {name!r}: binary_data_size {size!r} runs past the {len(binary)} bytes of "
                "binary data in the body.",
                status=400,
            )
        values = _decode_binary(name, datatype, binary[offset : offset + size], rows)
        return Tensor(name, datatype, tuple(shape), values), offset + size
    if "data" not in raw:
        raise RequestError(f"input {name!r} has no 'data'.")
    flat = _flatten(name, raw["data"], len(shape))
    if len(flat) != rows:
        raise RequestError(
            f"input {name!r}: shape {shape!r} needs {rows} element(s) but 'data' holds {len(flat)}."
        )
    return Tensor(name, datatype, tuple(shape), flat), offset


def _flatten(name: str, data: Any, depth: int) -> list[Any]:
    """``data`` flat, or nested at most ``depth`` lists deep, as one flat list."""
    if not isinstance(data, list):
        raise RequestError(f"input {name!r}: 'data' must be a list, got {describe(data)}.")
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            if depth <= 1:
                raise RequestError(f"input {name!r}: 'data' is nested deeper than its shape.")
            flat.extend(_flatten(name, item, depth - 1))
        else:
            flat.append(item)
    return flat


def _decode_binary(name: str, datatype: str, raw: bytes, rows: int) -> np.ndarray | list[Any]:
    if datatype != "BYTES":
        dtype = np.dtype(NUMERIC_DATATYPES[datatype])
        if len(raw) != rows * dtype.itemsize:
            raise RequestError(
                f"input {name!r}: {len(raw)} bytes of {datatype} data do not make the {rows} element(s) "
                f"of its shape ({dtype.itemsize} bytes each).",
                status=400,
            )
        return np.frombuffer(raw, dtype=dtype)
    values: list[Any] = []
    position = 0
    while position < len(raw):
        if position + 4 > len(raw):
            raise RequestError(f"input {name!r}: BYTES data ends inside a length prefix.", status=400)
        (length,) = struct.unpack_from("<I", raw, position)
        start, position = position + 4, position + 4 + length
        if position > len(raw):
            raise RequestError(f"input {name!r}: BYTES element {len(values)} runs past the data.", status=400)
        try:
            values.append(raw[start:position].decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(f"input {name!r}: BYTES element {len(values)} is not UTF-8 text.") from None
    if len(values) != rows:
        raise RequestError(
            f"input {name!r}: shape needs {rows} element(s) but the BYTES data holds {len(values)}."
        )
    return values


def infer_inputs(request: InferRequest, input_columns: Mapping[str, str], max_rows: int) -> ModelInputs:
    """The model's inputs from a parsed request: one column per raw input, in spec order.

    Raises:
        RequestError: (422) a column is missing, has the wrong datatype, or holds a bad element
            (a non-number, an infinite or out-of-float32-range number, a non-string in BYTES).
    """
    missing = [c for c in input_columns if c not in request.inputs]
    if missing:
        raise RequestError(
            f"missing input tensor(s) {', '.join(map(repr, missing))}; the model's inputs are "
            + ", ".join(f"{c} ({KIND_DATATYPE[k]})" for c, k in input_columns.items())
            + "."
        )
    if request.rows > max_rows:
        raise RequestError(
            f"too many rows: {request.rows} exceeds the limit of {max_rows} per request; split the request."
        )
    columns: dict[str, Any] = {}
    for column, kind in input_columns.items():
        tensor = request.inputs[column]
        columns[column] = _numeric(tensor) if kind == "float" else _strings(tensor)
    return ModelInputs(input_columns, columns, request.rows, nan_is_null=False)


def infer_table(request: InferRequest, input_columns: Mapping[str, str], max_rows: int) -> pa.Table:
    """``infer_inputs`` as a table: float64 (a missing value is NaN) / string (null) columns."""
    return infer_inputs(request, input_columns, max_rows).table()


def _numeric(tensor: Tensor) -> np.ndarray:
    if tensor.datatype not in NUMERIC_DATATYPES:
        raise RequestError(
            f"input {tensor.name!r} must be numeric (FP32 or another FP/INT/UINT datatype), "
            f"got {tensor.datatype}."
        )
    if isinstance(tensor.values, np.ndarray):
        values = tensor.values.astype(np.float64)
    else:
        for index, value in enumerate(tensor.values):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RequestError(
                    f"input {tensor.name!r} element {index} must be a number or null, got {describe(value)}."
                )
            if isinstance(value, int) and abs(value) > FLOAT32_MAX:  # before float() can overflow
                _too_large(tensor, index)
        values = np.asarray([math.nan if v is None else v for v in tensor.values], dtype=np.float64)
    # NaN (null) is a missing value and is imputed by the graph; beyond float32 would silently turn inf.
    bad = np.flatnonzero(np.abs(values) > FLOAT32_MAX)
    if bad.size:
        _too_large(tensor, int(bad[0]))
    return values


def _too_large(tensor: Tensor, index: int) -> NoReturn:
    value = tensor.values[index]
    raise RequestError(
        f"input {tensor.name!r} element {index} must be a finite float32 number, got "
        f"{describe(value.item() if isinstance(value, np.generic) else value)}; "
        "send null for a missing value."
    )


def _strings(tensor: Tensor) -> list[str | None]:
    if tensor.datatype != "BYTES":
        raise RequestError(f"input {tensor.name!r} must be BYTES (strings), got {tensor.datatype}.")
    values = list(tensor.values)
    for index, value in enumerate(values):
        if isinstance(value, str):
            check_text(value, f"input {tensor.name!r} (BYTES) element {index}")
        elif value is not None:
            raise RequestError(
                f"input {tensor.name!r} (BYTES) element {index} must be a string or null, "
                f"got {describe(value)}."
            )
    return values


def sticky_key(request: InferRequest, field: str) -> str | None:
    """A request's sticky key: ``parameters[field]``, else the first element of the input ``field``."""
    key = sticky_key_from_fields(request.parameters, field)
    if key is None:
        tensor = request.inputs.get(field)
        if tensor is None or len(tensor.values) == 0:
            return None
        first = tensor.values[0]
        key = sticky_key_from_fields({field: first.item() if isinstance(first, np.generic) else first}, field)
    return None if key is None else check_text(key, f"the sticky key {field!r}")  # it is hashed as UTF-8


class OipV2(ServingProtocol):
    """Open Inference Protocol v2 ``infer``, with the protocol's health and metadata routes."""

    name = "oip_v2"
    routes = {
        ("GET", "/v2/health/live"): OPEN,
        ("GET", "/v2/health/ready"): OPEN,
        ("GET", "/v2"): "viewer",
        ("GET", "/v2/models/{name}"): "viewer",
        ("GET", "/v2/models/{name}/ready"): "viewer",
        ("GET", "/v2/models/{name}/versions/{version}"): "viewer",
        ("GET", "/v2/models/{name}/versions/{version}/ready"): "viewer",
        ("POST", "/v2/models/{name}/infer"): "predictor",
        ("POST", "/v2/models/{name}/versions/{version}/infer"): "predictor",
    }
    request_schema = INFER_REQUEST_SCHEMA
    request_example = {
        "inputs": [{"name": "distance", "datatype": "FP32", "shape": [1, 1], "data": [1400.0]}]
    }
    answer_schema = INFER_ANSWER
    body_description = (
        "JSON; or, with an Inference-Header-Content-Length header, that many bytes of JSON "
        "followed by the tensors' raw bytes (the binary tensor extension, which tritonclient uses)."
    )

    def parse(self, body: bytes, headers: Mapping[str, str]) -> InferRequest:
        return parse_infer_request(body, headers.get(HEADER_LENGTH))

    def sticky_key(self, payload: InferRequest, field: str) -> str | None:
        return sticky_key(payload, field)

    def inputs(self, payload: InferRequest, spec: ModelSpec, max_rows: int) -> ModelInputs:
        check_outputs(payload, spec)
        return infer_inputs(payload, spec.request_columns, max_rows)

    def answer(
        self,
        name: str,
        spec: ModelSpec,
        prediction_id: str,
        probabilities: np.ndarray,
        payload: InferRequest,
        imputed: list[list[str]] | None = None,
        ood: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        task = spec.task_obj
        output, parameters = task.output().name, task.oip_parameters()
        answer = infer_response(
            name, spec.version, payload.id, prediction_id, probabilities, output, parameters
        )
        if imputed is not None:
            answer["parameters"]["imputed"] = imputed
        if ood is not None:
            answer["parameters"].update(ood_parameters(ood))
        return answer
