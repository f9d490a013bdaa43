"""Feedback: the true outcome of predicted rows (``POST /v1/feedback``), kept as sent and read as targets.

A feedback row (``<root>/feedback/model=<name>/date=<YYYY-MM-DD>/part-*.parquet``)::

    prediction_id  string          the prediction's id (the ``prediction-id`` header)
    row            int32           the row within that request
    outcome        float64         a numeric outcome as sent: a number; true / false as 1 / 0;
                                   null for a text outcome
    ts             timestamp[us, UTC]  when it arrived
    model          string          null when the client did not say
    outcome_text   string          a text outcome as sent ("YES", "setosa"); an integer's digits (exact
                                   beyond float64's 2**53); null otherwise. Absent from files written
                                   before tasks existed (they held numbers only): reads as null.

The outcome is any JSON scalar of the task's type: a bool or 0 / 1 (binary), a class value (multiclass,
or the positive / other class of a binary label), a number (regression). It is checked here only as a
scalar: which task it belongs to is known when the monitor joins it to its prediction, where
:func:`feedback_targets` turns it into the version's target with ``Task.outcome_targets``; an outcome
the task does not know is counted and reported there, never fatal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raymlops.errors import RequestError

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = [
    "FEEDBACK_SCHEMA",
    "LEGACY_FEEDBACK_SCHEMA",
    "TIMESTAMP",
    "Feedback",
    "feedback_table",
    "feedback_targets",
    "outcome_values",
    "parse_feedback",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")
# What feedback files held before outcomes of every task: a number only.
LEGACY_FEEDBACK_SCHEMA = pa.schema(
    [
        ("prediction_id", pa.string()),
        ("row", pa.int32()),
        ("outcome", pa.float64()),
        ("ts", TIMESTAMP),
        ("model", pa.string()),
    ]
)
FEEDBACK_SCHEMA = LEGACY_FEEDBACK_SCHEMA.append(pa.field("outcome_text", pa.string()))
_FEEDBACK_KEYS = ("prediction_id", "outcome", "row", "model")
_MAX_ID_CHARS = 256
_MAX_OUTCOME_CHARS = 256
_INT32_MAX = 2**31 - 1
_EXACT_INT = 2**53  # integers beyond this lose digits as float64: outcome_text keeps them


@dataclass(frozen=True)
class Feedback:
    """The true outcome of one predicted row: a bool, a number or a text (a class value)."""

    prediction_id: str
    outcome: bool | int | float | str
    row: int = 0
    model: str | None = None


def _check_text(value: str, where: str) -> None:
    """A 422 for strings Arrow cannot store: JSON ``\\ud800`` escapes decode to lone surrogates."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(f"{where} must be valid Unicode text (a lone surrogate escape).") from None


def _outcome(value: Any, where: str) -> bool | int | float | str:
    kinds = "a bool, a number or a class value (a string)"
    if isinstance(value, str):
        if not value or len(value) > _MAX_OUTCOME_CHARS:
            raise RequestError(
                f"{where} must be a non-empty string of at most {_MAX_OUTCOME_CHARS} characters "
                f"when it is text, got {value[:60]!r}."
            )
        _check_text(value, where)
        return value
    if isinstance(value, bool):
        return value
    if not isinstance(value, int | float):
        shown = "null" if value is None else f"a JSON {type(value).__name__}"
        raise RequestError(f"{where} must be a JSON scalar: {kinds}; got {shown}.")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise RequestError(f"{where} must be a finite number, got {value!r}.")
    return value


def _feedback_item(index: int, item: Any) -> Feedback:
    where = f"feedback[{index}]"
    if not isinstance(item, Mapping):
        raise RequestError(f'{where} must be an object like {{"prediction_id": ..., "outcome": ...}}.')
    unknown = sorted(str(k) for k in item if k not in _FEEDBACK_KEYS)
    if unknown:
        raise RequestError(f"{where}: unknown field {unknown[0]!r}; fields: {', '.join(_FEEDBACK_KEYS)}.")
    prediction_id = item.get("prediction_id")
    if not isinstance(prediction_id, str) or not prediction_id or len(prediction_id) > _MAX_ID_CHARS:
        raise RequestError(
            f"{where}.prediction_id must be the non-empty string of a prediction-id header "
            f"(at most {_MAX_ID_CHARS} characters), got {str(prediction_id)[:60]!r}."
        )
    _check_text(prediction_id, f"{where}.prediction_id")
    if "outcome" not in item:
        raise RequestError(f"{where}.outcome is missing: send the true label or value.")
    outcome = _outcome(item["outcome"], f"{where}.outcome")
    row = item.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or not 0 <= row <= _INT32_MAX:
        raise RequestError(f"{where}.row must be a row index (an integer >= 0), got {row!r}.")
    model = item.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise RequestError(f"{where}.model must be a non-empty string when given, got {model!r}.")
    if model is not None:
        _check_text(model, f"{where}.model")
    return Feedback(prediction_id, outcome, row, model)


def parse_feedback(body: bytes, *, max_items: int) -> list[Feedback]:
    """A ``/v1/feedback`` body: one object, ``{"feedback": [objects]}`` or a bare list of objects.

    Raises:
        RequestError: 400 for a body that is not JSON, 422 naming the first bad item otherwise.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, 4300+ digit ints
        raise RequestError(f"request body is not valid JSON: {exc}", status=400) from None
    if isinstance(payload, Mapping) and "feedback" in payload:
        if len(payload) != 1:
            raise RequestError('a {"feedback": [...]} body takes no other field.')
        payload = payload["feedback"]
    elif isinstance(payload, Mapping):
        payload = [payload]
    if not isinstance(payload, list):
        raise RequestError(
            'feedback must be {"prediction_id": ID, "outcome": VALUE, "row": N, "model": NAME} '
            f'or {{"feedback": [...]}} of those, got a JSON {type(payload).__name__}.'
        )
    if not payload:
        raise RequestError("feedback is empty: send at least one item.")
    if len(payload) > max_items:
        raise RequestError(f"too many feedback items: {len(payload)} exceeds the limit of {max_items}.")
    return [_feedback_item(i, item) for i, item in enumerate(payload)]


def _stored(outcome: Any) -> tuple[float | None, str | None]:
    """(outcome, outcome_text) of one outcome: nothing of what was sent is lost."""
    if isinstance(outcome, str):
        return None, outcome
    if isinstance(outcome, bool):
        return float(outcome), None
    if isinstance(outcome, int):
        return float(outcome), str(outcome) if abs(outcome) > _EXACT_INT else None
    return float(outcome), None


def feedback_table(items: Sequence[Feedback], *, ts_us: int | None = None) -> pa.Table:
    """Feedback items as rows of ``FEEDBACK_SCHEMA`` (``ts_us`` None: now)."""
    if ts_us is None:
        import time

        ts_us = time.time_ns() // 1000
    stored = [_stored(f.outcome) for f in items]
    return pa.Table.from_arrays(
        [
            pa.array([f.prediction_id for f in items], pa.string()),
            pa.array([f.row for f in items], pa.int32()),
            pa.array([s[0] for s in stored], pa.float64()),
            pa.array([ts_us] * len(items), TIMESTAMP),
            pa.array([f.model for f in items], pa.string()),
            pa.array([s[1] for s in stored], pa.string()),
        ],
        schema=FEEDBACK_SCHEMA,
    )


def outcome_values(table: pa.Table) -> list[Any]:
    """The outcomes of feedback rows (or of predictions joined to them) as sent: a text, an integer
    kept exactly, or a number (a bool reads back as 1.0 / 0.0); None where no outcome came."""
    numbers = table["outcome"].to_pylist()
    texts = (
        table["outcome_text"].to_pylist() if "outcome_text" in table.column_names else [None] * len(numbers)
    )
    out: list[Any] = []
    for number, text in zip(numbers, texts, strict=True):
        if text is None:
            out.append(number)
        elif number is None:
            out.append(text)
        else:  # an integer beyond float64's exact range, its digits kept
            out.append(int(text))
    return out


def feedback_targets(task: Task, values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """(targets, float64 with NaN where the outcome is unknown to ``task``; the unknown outcomes).

    One vectorised ``task.outcome_targets`` call when every outcome is known; row by row otherwise, so
    that one client's wrong class value costs its own rows only."""
    if not len(values):
        return np.empty(0, np.float64), []
    try:
        return np.asarray(task.outcome_targets(values), np.float64).reshape(-1), []
    except ValueError:
        pass
    targets = np.full(len(values), np.nan)
    unknown = []
    for i, value in enumerate(values):
        try:
            targets[i] = float(np.asarray(task.outcome_targets([value]), np.float64).reshape(-1)[0])
        except ValueError:
            unknown.append(value)
    return targets, unknown
