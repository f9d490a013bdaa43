"""The ``/v1`` protocol: ``POST /v1/models/{name}/predict`` with ``{"records": [...]}`` or a bare list.

Each record is a JSON object of raw input column -> value (``null``: missing, imputed by the graph as in
training; other keys are ignored); the answer is one row per record in the version's task's shape
(``Task.answers``: binary ``{"probability", "label"}``, multiclass ``{"label", "probabilities"}``,
regression ``{"value"}``). Bodies
are checked here, before onnxruntime sees anything, so every malformed request is answered with a 422
that names the row and column instead of an onnxruntime error (or a 500). The rest of the ``/v1`` API
(explain, feedback, the model list and statistics) shares its body and its roles.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raymlops.errors import RequestError
from raymlops.serving.model_inputs import FLOAT32_MAX, ModelInputs, check_text, describe
from raymlops.serving.policy import sticky_key_from_fields
from raymlops.serving.protocols.base import ServingProtocol
from raymlops.tasks.registry import TASKS, task_class

if TYPE_CHECKING:
    from raymlops.serving.spec import ModelSpec
    from raymlops.tasks.base import Task

__all__ = ["PREDICT_ANSWER", "RECORDS_SCHEMA", "V1", "parse_records", "records_to_inputs", "records_to_table"]

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


COLUMNS_SCHEMA = {"type": "array", "items": {"type": "string"}}
_ROW_EXTRAS = {
    "imputed": {**COLUMNS_SCHEMA, "description": "Feature views the row was missing from."},
    "ood": {
        **COLUMNS_SCHEMA,
        "description": "Columns whose value lies outside the version's training profile "
        "(present when the version is checked: serve.ood.enabled and a registered profile).",
    },
}


def _answer_row(task: type[Task]) -> dict[str, Any]:
    """One prediction of a version of ``task``: the task's fields (``Task.answer_schema``) and ours."""
    row = dict(task.answer_schema())
    return {
        **row,
        "title": f"{task.name} answer",
        "additionalProperties": False,
        "properties": {**row.get("properties", {}), **_ROW_EXTRAS},
    }


# One row shape per task (binary: probability, label; multiclass: label, probabilities by class name;
# regression: value): a name's versions answer in their own task's shape.
PREDICT_ANSWER = {
    "type": "object",
    "required": ["model_name", "model_version", "prediction_id", "predictions"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "prediction_id": {"type": "string"},
        "predictions": {
            "type": "array",
            "items": {"anyOf": [_answer_row(task_class(name)) for name in TASKS]},
        },
    },
}


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


class V1(ServingProtocol):
    """``/v1/models/{name}/predict``: ``{"records": [...]}`` or a bare list of records."""

    name = "v1"
    routes = {
        ("GET", "/v1/models"): "viewer",
        ("GET", "/v1/models/{name}/stats"): "viewer",
        ("POST", "/v1/models/{name}/predict"): "predictor",
        ("POST", "/v1/models/{name}/explain"): "predictor",
        ("POST", "/v1/feedback"): "predictor",
    }
    request_schema = RECORDS_SCHEMA
    request_example = {"records": [{"distance": 1400.0, "hour": 7, "origin": "JFK"}]}
    answer_schema = PREDICT_ANSWER

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Any:
        return parse_records(body)

    def sticky_key(self, payload: Any, field: str) -> str | None:
        key = sticky_key_from_fields(payload[0], field) if isinstance(payload, list) and payload else None
        return None if key is None else check_text(key, f"the sticky key {field!r}")  # hashed as UTF-8

    def inputs(self, payload: Any, spec: ModelSpec, max_rows: int) -> ModelInputs:
        return records_to_inputs(payload, spec.request_columns, max_rows)

    def answer(
        self,
        name: str,
        spec: ModelSpec,
        prediction_id: str,
        probabilities: np.ndarray,
        payload: Any,
        imputed: list[list[str]] | None = None,
        ood: list[list[str]] | None = None,
    ) -> dict[str, Any]:
        # The task's fields: binary probability + label, multiclass label + probabilities, regression value.
        predictions = spec.task_obj.answers(probabilities, spec.threshold)
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
