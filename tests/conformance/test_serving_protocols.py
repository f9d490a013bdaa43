"""Every serving protocol keeps the contract of raymlops.serving.protocols.base: each registered one
(v1, OIP v2) and ``EchoRows`` below, defined only here and named by its dotted path, parses a real
request, turns it into a real composed ONNX graph's inputs, scores it with onnxruntime and answers in
the shape it declares; it declares its routes with real roles; and a bad body is a ``RequestError``
with a 4xx status, never another exception. No Ray: the router's part is shared by every protocol and
tested over HTTP in tests/integration/test_serving*.py."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from raymlops.errors import ConfigError, RequestError
from raymlops.security.role_ranks import ROLES
from raymlops.serving.model_inputs import ModelInputs, check_text, describe
from raymlops.serving.onnx_model import LoadedModel
from raymlops.serving.protocols import PROTOCOLS, ROUTE_ROLES, ServingProtocol, protocol_class
from raymlops.serving.protocols.registry import route_roles
from raymlops.serving.spec import ModelSpec
from tests.integration.test_serving import PRE, ROWS, WEIGHTS, direct_probabilities, model_graph


class EchoRows(ServingProtocol):
    """A protocol of one's own, complete: ``{"rows": [[value, ...], ...], "key": "..."}`` with the
    values in the version's request-column order; answers ``{"scores": [...]}``."""

    name = "echo_rows"
    routes = {("POST", "/echo/models/{name}/score"): "predictor"}
    request_schema = {
        "type": "object",
        "required": ["rows"],
        "properties": {"rows": {"type": "array", "items": {"type": "array"}}, "key": {"type": "string"}},
    }
    request_example = {"rows": [[1400.0, 7, "JFK"]]}
    answer_schema = {
        "type": "object",
        "required": ["model_version", "prediction_id", "scores"],
        "properties": {"scores": {"type": "array", "items": {"type": "number"}}},
    }

    def parse(self, body: bytes, headers: Mapping[str, str]) -> Any:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise RequestError(f"request body is not valid JSON: {exc}", status=400) from None
        if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
            raise RequestError('request body must be {"rows": [[value, ...], ...]}.')
        return payload

    def sticky_key(self, payload: Any, field: str) -> str | None:
        key = payload.get(field)
        return check_text(key, f"the sticky key {field!r}") if isinstance(key, str) else None

    def inputs(self, payload: Any, spec: ModelSpec, max_rows: int) -> ModelInputs:
        kinds = spec.request_columns
        rows = payload["rows"]
        if not rows or len(rows) > max_rows:
            raise RequestError(f"send 1 to {max_rows} rows, got {len(rows)}.")
        columns: dict[str, list[Any]] = {name: [] for name in kinds}
        for index, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(kinds):
                raise RequestError(f"row {index} must be a list of {len(kinds)} values, got {describe(row)}.")
            for (name, kind), value in zip(kinds.items(), row, strict=True):
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if value is not None and (kind == "float") != number:
                    raise RequestError(
                        f"row {index} column {name!r} must be a {kind}, got {describe(value)}."
                    )
                if kind == "float" and value is not None and not math.isfinite(value):
                    raise RequestError(f"row {index} column {name!r} must be finite, got {value!r}.")
                if kind == "string" and value is not None:
                    value = check_text(value, f"row {index} column {name!r}")
                columns[name].append(math.nan if kind == "float" and value is None else value)
        return ModelInputs(
            kinds,
            {n: np.asarray(v, dtype=np.float64) if kinds[n] == "float" else v for n, v in columns.items()},
            len(rows),
        )

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
        answer = {
            "model_version": spec.version,
            "prediction_id": prediction_id,
            "scores": probabilities.tolist(),
        }
        return answer | ({"ood": ood} if ood is not None else {}) | ({"imputed": imputed} if imputed else {})


EXTERNAL = f"{__name__}:EchoRows"
PROTOCOL_REFS = [*PROTOCOLS, EXTERNAL]
BYTES_OF = {"float": "FP32", "string": "BYTES"}


def v1_body(rows: list[dict[str, Any]], key: str | None = None) -> bytes:
    return json.dumps({"records": [row | ({"user": key} if key else {}) for row in rows]}).encode()


def oip_v2_body(rows: list[dict[str, Any]], key: str | None = None) -> bytes:
    inputs = [
        {
            "name": column,
            "datatype": BYTES_OF[kind],
            "shape": [len(rows), 1],
            "data": [r[column] for r in rows],
        }
        for column, kind in PRE.input_columns.items()
    ]
    return json.dumps({"inputs": inputs} | ({"parameters": {"user": key}} if key else {})).encode()


def echo_body(rows: list[dict[str, Any]], key: str | None = None) -> bytes:
    values = [[row[column] for column in PRE.input_columns] for row in rows]
    return json.dumps({"rows": values} | ({"user": key} if key else {})).encode()


# How a client writes ROWS in each protocol: the suite's one per-protocol fact.
BODIES: dict[str, Callable[..., bytes]] = {"v1": v1_body, "oip_v2": oip_v2_body, EXTERNAL: echo_body}

# Bodies no protocol can score: broken framing, the wrong JSON, the wrong shapes and cell types.
BAD_BODIES = [
    b"",
    b"{",
    b"\xff\xfe\x00",
    b"null",
    b"123",
    b'"text"',
    b"[]",
    b"{}",
    b"[[[[[[[[]]]]]]]]",
    b'{"records": 5, "inputs": 5, "rows": 5}',
    b'{"records": [], "inputs": [], "rows": []}',
    b'{"records": [1], "inputs": [1], "rows": [1]}',
    b'{"records": [{}], "inputs": [{}], "rows": [[]]}',
    b"9" * 5000,
    b'{"rows": [[1e999, 1, "a"]], "records": [{"distance": 1e999, "hour": 1, "origin": "a"}]}',
    b'{"rows": [["x", 1, 2]], "records": [{"distance": "x", "hour": 1, "origin": 2}]}',
    b'{"rows": [[1, 1, "\\ud800"]], "records": [{"distance": 1, "hour": 1, "origin": "\\ud800"}]}',
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """A real composed graph on disk (the serving tests' preprocessor and weights)."""
    import onnx

    from raymlops.models.export import compose_pipeline

    path = Path(tmp_path_factory.mktemp("protocols")) / "flights-v1.onnx"
    onnx.save(compose_pipeline(PRE, model_graph(WEIGHTS["1"])), str(path))
    return ModelSpec("flights", "1", str(path), "delta-1", PRE.input_columns, threshold=0.5)


@pytest.fixture(scope="module")
def model(spec: ModelSpec) -> LoadedModel:
    return LoadedModel(spec)


@pytest.fixture(params=PROTOCOL_REFS)
def ref(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def protocol_of(ref: str) -> ServingProtocol:
    return protocol_class(ref)()


def test_the_registry_resolves_names_and_dotted_paths(ref: str) -> None:
    cls = protocol_class(ref)
    assert issubclass(cls, ServingProtocol)
    assert cls is PROTOCOLS.get(ref, EchoRows)
    assert ref not in PROTOCOLS or cls.name == ref  # a registered protocol is listed under its own name


def test_a_request_round_trips_through_a_real_graph(ref: str, spec: ModelSpec, model: LoadedModel) -> None:
    protocol = protocol_of(ref)
    payload = protocol.parse(BODIES[ref](ROWS), {})
    inputs = protocol.inputs(payload, spec, max_rows=100)
    assert (inputs.rows, dict(inputs.kinds), list(inputs.columns)) == (
        len(ROWS),
        dict(spec.request_columns),
        list(spec.request_columns),
    )
    probabilities = model.predict_inputs(inputs)
    np.testing.assert_allclose(probabilities, direct_probabilities(spec.onnx_path, ROWS), rtol=1e-6)
    for imputed, ood in ((None, None), ([[]] * len(ROWS), [["distance"]] * len(ROWS))):
        answer = protocol.answer("flights", spec, "p-123", probabilities, payload, imputed, ood)
        text = json.dumps(answer, allow_nan=False)  # an answer is plain JSON, never NaN
        assert "p-123" in text and spec.version in text
        if protocol.answer_schema is not None:
            jsonschema.validate(answer, dict(protocol.answer_schema))


def test_the_sticky_key_is_read_from_the_body(ref: str) -> None:
    protocol = protocol_of(ref)
    assert protocol.sticky_key(protocol.parse(BODIES[ref](ROWS[:1], key="u-42"), {}), "user") == "u-42"
    assert protocol.sticky_key(protocol.parse(BODIES[ref](ROWS[:1]), {}), "user") is None


def test_too_many_rows_is_a_422(ref: str, spec: ModelSpec) -> None:
    protocol = protocol_of(ref)
    with pytest.raises(RequestError) as caught:
        protocol.inputs(protocol.parse(BODIES[ref](ROWS), {}), spec, max_rows=len(ROWS) - 1)
    assert caught.value.status == 422


@pytest.mark.parametrize("body", BAD_BODIES, ids=range(len(BAD_BODIES)))
def test_a_bad_body_is_a_4xx_never_another_error(ref: str, spec: ModelSpec, body: bytes) -> None:
    protocol = protocol_of(ref)
    with pytest.raises(RequestError) as caught:
        payload = protocol.parse(body, {})
        protocol.sticky_key(payload, "user")
        protocol.inputs(payload, spec, max_rows=100)
    assert 400 <= caught.value.status < 500, caught.value


def test_routes_and_roles_are_declared(ref: str) -> None:
    protocol = protocol_class(ref)
    assert protocol.routes, "a protocol serves at least its scoring route"
    for (method, path), role in protocol.routes.items():
        assert method in {"GET", "POST", "PUT", "DELETE"} and path.startswith("/")
        assert role is None or role in ROLES
    assert route_roles([protocol]).items() >= dict(protocol.routes).items()
    assert protocol.request_schema and protocol.request_example is not None


def test_the_route_table_is_what_the_registered_protocols_declare() -> None:
    declared = {route: role for cls in PROTOCOLS.values() for route, role in cls.routes.items()}
    assert {r: ROUTE_ROLES[r] for r in declared} == declared
    assert set(ROUTE_ROLES) - set(declared) == {
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
    }


def test_a_route_declared_twice_with_two_roles_is_refused() -> None:
    class Clash(EchoRows):
        routes = {("POST", "/v1/models/{name}/predict"): "viewer"}

    with pytest.raises(ConfigError, match="predictor"):
        route_roles([*PROTOCOLS.values(), Clash])


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("v3", "no registered protocol"),
        ("tests.nowhere:Proto", "cannot load"),
        (f"{__name__}:BODIES", "not a ServingProtocol"),
    ],
)
def test_an_unknown_protocol_is_a_config_error(name: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        protocol_class(name)
