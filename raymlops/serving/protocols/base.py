"""The contract of a serving protocol: how one API reads a scoring request and writes its answer.

The router's work in between is the same for every protocol (choose the version, fetch features,
check the training profile, score, fall back, shadow, log: ``raymlops.serving.scoring``). A protocol
supplies the four steps that differ, and declares what the router and its API-key check need to know:

- ``parse(body, headers)``: the raw body (no Content-Type is trusted) -> a payload; a malformed body
  raises ``RequestError`` (400 for bad framing or JSON, 422 for a body of the wrong shape).
- ``sticky_key(payload, field)``: the request's sticky routing key from its fields, or ``None``.
- ``inputs(payload, spec, max_rows)``: the payload checked against one version's request columns ->
  ``ModelInputs``; anything the model cannot take raises ``RequestError`` (422) naming row and column.
- ``answer(...)``: the JSON answer for the version's probabilities.
- ``routes``: every route of its API, ``(method, path as FastAPI writes it) -> lowest role`` (``OPEN``:
  anyone); the API-key check's table is what the registered protocols declare
  (``registry.ROUTE_ROLES``).
- The OpenAPI description of its scoring body and answer (``request_schema``, ``request_example``,
  ``answer_schema``, ``body_description``).

A protocol of your own subclasses ``ServingProtocol``, is named ``"package.module:ClassName"`` where a
registered name is expected (``registry.protocol_class``), and passes
``tests/conformance/test_serving_protocols.py``; that suite's ``EchoRows`` is a complete example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

    from raymlops.serving.model_inputs import ModelInputs
    from raymlops.serving.spec import ModelSpec

__all__ = ["OPEN", "ServingProtocol"]

OPEN = None  # the "role" of a route anyone may call


class ServingProtocol(ABC):
    """One API's request parsing and answer shape; stateless, so one instance serves every request."""

    name: ClassVar[str]  # the registry's name for it
    # (method, path as FastAPI writes it) -> the lowest role that may call it, or OPEN.
    routes: ClassVar[Mapping[tuple[str, str], str | None]]
    # The scoring body, for the OpenAPI document (the router reads the raw body itself).
    request_schema: ClassVar[Mapping[str, Any]]
    request_example: ClassVar[Any]
    answer_schema: ClassVar[Mapping[str, Any] | None] = None  # the 200 answer's JSON schema
    body_description: ClassVar[str] = "JSON"

    @abstractmethod
    def parse(self, body: bytes, headers: Mapping[str, str]) -> Any:
        """The request's payload from its raw body; ``RequestError`` (400/422) when malformed."""

    @abstractmethod
    def sticky_key(self, payload: Any, field: str) -> str | None:
        """The sticky routing key named ``field`` in the payload, or ``None`` (weighted choice)."""

    @abstractmethod
    def inputs(self, payload: Any, spec: ModelSpec, max_rows: int) -> ModelInputs:
        """The payload as ``spec``'s request columns; ``RequestError`` (422) for anything else."""

    @abstractmethod
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
        """The JSON answer. ``imputed``: per row, the feature views it was missing from (a version
        with a feature lookup); ``ood``: per row, the columns outside the training profile (a
        checked version). ``None``: not applicable, and left out of the answer."""
