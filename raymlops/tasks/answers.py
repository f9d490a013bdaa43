"""One v1 answer row per task as a pydantic model: the source of ``Task.answer_schema`` (the serving
OpenAPI document's answer rows), built once when the router's document is, never per request.

Only the schema comes from these models: ``Task.answers`` builds the rows as plain dicts on the hot
path, where validating a model per row would cost time for nothing the schema does not already say.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

__all__ = ["BinaryAnswer", "MulticlassAnswer", "RegressionAnswer", "answer_row_schema"]

Probability = Annotated[float, Field(ge=0, le=1)]


class BinaryAnswer(BaseModel):
    """A binary task's answer row."""

    probability: Probability
    label: int | str | bool | float = Field(
        description="0 / 1 for a label made by a threshold; else the positive class or the other, as the "
        "label column holds them."
    )


class MulticlassAnswer(BaseModel):
    """A multiclass task's answer row."""

    label: str | int | float | bool = Field(description="The likeliest class.")
    probabilities: dict[str, Probability] = Field(description="Class name -> probability.")


class RegressionAnswer(BaseModel):
    """A regression task's answer row."""

    value: float


def answer_row_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema as one answer row of the OpenAPI document (no ``$defs``: none used)."""
    return model.model_json_schema()
