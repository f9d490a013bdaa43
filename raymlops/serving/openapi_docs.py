"""The OpenAPI document's parts the router cannot infer: raw bodies, their answers, the error shape.

Every scoring endpoint reads its raw body itself (tritonclient posts with no Content-Type), so FastAPI
neither parses nor documents it: ``body_doc`` declares it, and a protocol's own schemas
(``ServingProtocol.request_schema`` ...) make its scoring route's document (``score_doc``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from raymlops.serving.protocols.base import ServingProtocol
from raymlops.serving.protocols.v1 import RECORDS_SCHEMA, V1
from raymlops.serving.schemas import feedback_body_schema

__all__ = ["ERROR_RESPONSES", "EXPLAIN_DOC", "FEEDBACK_DOC", "body_doc", "score_doc"]

# Every error answer is {"error": "..."}; the OpenAPI document declares it for every 4xx a route can
# give (and 503), so that clients, and the fuzz test's response checks, know every answer's shape.
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
}
_ERROR_STATUSES = {
    400: "The body is not valid JSON (or binary tensor framing).",
    401: "No API key, or an invalid one (auth on).",
    403: "The key's role may not call this route.",
    404: "No such model, version or route.",
    405: "The route does not take this method.",
    409: "Feedback without a prediction log.",
    413: "The body exceeds max_body_bytes.",
    422: "The request breaks the input schema, a limit, or (ood.action=reject) the training profile.",
    429: "Rate limit exceeded; retry after Retry-After seconds.",
    503: "Not ready, or the online store cannot be reached.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Whole seconds until the client's next request is allowed.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {"application/json": {"schema": _ERROR_SCHEMA}},
        **({"headers": _RETRY_AFTER} if status == 429 else {}),
    }
    for status, description in _ERROR_STATUSES.items()
}


def body_doc(
    schema: Mapping[str, Any],
    example: Any,
    description: str = "JSON",
    answer: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` declaring the JSON body a raw-body endpoint reads, so that the OpenAPI
    document (and the clients and fuzzers built from it) shows it; FastAPI neither parses nor checks it.
    ``answer``: the JSON schema of its 200 answer (FastAPI cannot infer it from a JSONResponse).
    """
    content = {"application/json": {"schema": dict(schema), "example": example}}
    extra: dict[str, Any] = {
        "requestBody": {"required": True, "description": description, "content": content}
    }
    if answer is not None:
        ok = {"description": "Successful Response", "content": {"application/json": {"schema": dict(answer)}}}
        extra["responses"] = {"200": ok}
    return extra


def score_doc(protocol: type[ServingProtocol]) -> dict[str, Any]:
    """``openapi_extra`` of a protocol's scoring route, from what the protocol declares."""
    return body_doc(
        protocol.request_schema,
        protocol.request_example,
        description=protocol.body_description,
        answer=protocol.answer_schema,
    )


EXPLAIN_DOC = body_doc(RECORDS_SCHEMA, V1.request_example)
# Generated from the pydantic model (serving/schemas.py), not kept in step with the parser by hand.
FEEDBACK_DOC = body_doc(
    feedback_body_schema(),
    {"prediction_id": "0b7e6a1c9d2f4e3a8b5c6d7e8f901234", "outcome": 1, "row": 0},
)
