"""Pydantic models of JSON shapes off the hot path, the source of their OpenAPI schemas.

The router documents raw-body endpoints by hand (``openapi_docs.body_doc``); the shapes below generate
those schemas instead of dicts kept in step with the parsers by hand. The scoring answers stay
hand-written per protocol: they are built on the hot path, where a model per answer would cost a
validation per request for nothing (their schemas live with each protocol).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["MAX_ID_CHARS", "FeedbackItem", "feedback_body_schema"]

MAX_ID_CHARS = 256  # a prediction id's length limit (monitoring/feedback.py checks the same)


class FeedbackItem(BaseModel):
    """One true outcome sent to ``/v1/feedback``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    prediction_id: str = Field(min_length=1, max_length=MAX_ID_CHARS, description="a prediction-id header")
    # 0 / 1 (or true / false) or the label's value (binary), a class (multiclass), a number (regression)
    outcome: float | Annotated[str, Field(min_length=1, max_length=256)] | bool = Field(
        description="the true outcome, in the task's terms"
    )
    row: int = Field(0, ge=0, le=2**31 - 1, description="the row of a batch request")
    model: Annotated[str, Field(min_length=1)] | None = Field(None, description="null: not given")


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema, inlined (no ``$defs``: it is embedded in an OpenAPI operation)."""
    return model.model_json_schema(ref_template="#/components/schemas/{model}")


def feedback_body_schema() -> dict[str, Any]:
    """One item, ``{"feedback": [items]}``, or a bare list of items."""
    item = _schema(FeedbackItem)
    items = {"type": "array", "minItems": 1, "items": item}
    wrapped = {
        "type": "object",
        "required": ["feedback"],
        "additionalProperties": False,
        "properties": {"feedback": items},
    }
    return {"anyOf": [item, wrapped, items]}
