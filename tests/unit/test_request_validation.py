"""Request validation and routing-table checks for serving; no Ray, no onnxruntime."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from raymlops.errors import ConfigError, RequestError
from raymlops.models.export import onnx_feeds
from raymlops.serving.onnx_model import LoadedModel
from raymlops.serving.protocols import oip_v2
from raymlops.serving.protocols.v1 import parse_records, records_to_inputs, records_to_table
from raymlops.serving.spec import ModelSpec, build_user_config, choose_version, parse_user_config

COLUMNS = {"distance": "float", "hour": "float", "origin": "string"}
GOOD = {"distance": 1200.5, "hour": 7, "origin": "JFK"}


def spec(version: str = "1", weight: float = 1.0) -> ModelSpec:
    return ModelSpec(
        name="flights",
        version=version,
        onnx_path="/m.onnx",
        data_version="3",
        input_columns=dict(COLUMNS),
        weight=weight,
    )


def reject(records: object, *, max_rows: int = 100) -> str:
    with pytest.raises(RequestError) as info:
        records_to_table(records, COLUMNS, max_rows)
    assert info.value.status == 422
    return info.value.message


def test_good_records_build_the_input_table() -> None:
    records = [GOOD, {"distance": None, "hour": 23.0, "origin": None, "extra": [1, 2]}]
    table = records_to_table(records, COLUMNS, max_rows=2)
    assert table.column_names == ["distance", "hour", "origin"]
    assert table.schema.field("distance").type == pa.float64()
    assert table.schema.field("origin").type == pa.string()
    assert table.to_pylist() == [
        {"distance": 1200.5, "hour": 7.0, "origin": "JFK"},
        {"distance": None, "hour": 23.0, "origin": None},
    ]


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        ({"records": [GOOD]}, "must be a list of JSON objects, got dict"),
        ("text", "must be a list of JSON objects, got str"),
        ([], "records is empty"),
        ([GOOD, 3], "record 1 must be a JSON object, got int 3"),
        ([GOOD, {"hour": 1, "origin": "EWR"}], "record 1 is missing column(s) 'distance'"),
        (
            [{"distance": "12", "hour": 1, "origin": "EWR"}],
            "record 0 column 'distance' must be a number or null, got str",
        ),
        (
            [{"distance": True, "hour": 1, "origin": "EWR"}],
            "column 'distance' must be a number or null, got bool",
        ),
        ([{"distance": 1, "hour": [1], "origin": "EWR"}], "column 'hour' must be a number or null, got list"),
        ([{"distance": float("nan"), "hour": 1, "origin": "EWR"}], "must be a finite float32 number"),
        ([{"distance": 10**400, "hour": 1, "origin": "EWR"}], "must be a finite float32 number"),
        ([{"distance": 1e39, "hour": 1, "origin": "EWR"}], "must be a finite float32 number"),
        (
            [{"distance": 1, "hour": 1, "origin": 5}],
            "record 0 column 'origin' must be a string or null, got int 5",
        ),
        (
            [{"distance": 1, "hour": 1, "origin": {"a": 1}}],
            "column 'origin' must be a string or null, got dict",
        ),
    ],
)
def test_bad_records_are_rejected_precisely(records: object, expected: str) -> None:
    assert expected in reject(records)


def test_missing_columns_are_all_named_with_the_required_ones() -> None:
    message = reject([{"origin": "EWR"}])
    assert "record 0 is missing column(s) 'distance', 'hour'" in message
    assert "required columns: distance, hour, origin" in message


def test_too_many_rows() -> None:
    assert "too many records: 3 exceeds the limit of 2" in reject([GOOD] * 3, max_rows=2)


def test_long_values_are_truncated_in_messages() -> None:
    message = reject([{**GOOD, "hour": "x" * 1000}])
    assert len(message) < 200


def test_predict_body_parsing() -> None:
    assert parse_records(json.dumps({"records": [GOOD]}).encode()) == [GOOD]
    assert parse_records(json.dumps([GOOD]).encode()) == [GOOD]
    for body, status, text in [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b"\xff\xfe\xfa", 400, "not valid JSON"),
        (b'{"rows": []}', 422, "got an object with keys 'rows'"),
        (b"42", 422, "got a JSON int"),
    ]:
        with pytest.raises(RequestError) as info:
            parse_records(body)
        assert info.value.status == status and text in info.value.message


def test_spec_round_trips_through_user_config() -> None:
    config = build_user_config([spec("1", 0.9), spec("2", 0.1)], max_rows_per_request=50)
    json.dumps(config)  # Serve's user_config must be JSON-serialisable
    routing = parse_user_config(config)
    assert routing.models["flights"] == (spec("1", 0.9), spec("2", 0.1))
    assert routing.max_rows_per_request == 50 and routing.use_gpu is False


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: build_user_config([spec("1"), spec("1")]), "version(s) listed twice: 1"),
        (lambda: build_user_config([spec("1", 0.0)]), "all versions have weight 0"),
        (lambda: spec(weight=-1), "must be a finite number >= 0"),
        (lambda: ModelSpec("m", "1", "/m.onnx", "3", {"a": "int"}), "kind 'int' is not one of float, string"),
        (lambda: ModelSpec.from_dict({**spec().to_dict(), "wieght": 1}), "Did you mean 'weight'"),
        (lambda: ModelSpec.from_dict({"name": "m"}), "missing field(s): data_version, input_columns"),
        (
            lambda: parse_user_config({"models": {}, "max_row_per_request": 3}),
            "Did you mean 'max_rows_per_request'",
        ),
    ],
)
def test_bad_routing_tables_fail_with_a_config_error(make: object, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()  # type: ignore[operator]
    assert expected in str(info.value)


def test_choose_version_follows_weights() -> None:
    rng = random.Random(0)
    specs = [spec("1", 0.0), spec("2", 1.0)]
    assert {choose_version(specs, rng).version for _ in range(50)} == {"2"}
    specs = [spec("1", 3.0), spec("2", 1.0)]
    picks = [choose_version(specs, rng).version for _ in range(4000)]
    assert 0.7 < picks.count("1") / len(picks) < 0.8


# -- request paths the schemathesis fuzzing (tests/integration/test_serving_fuzz.py) led to ---------

HUGE_INT = b"1" * 5000  # beyond Python's 4300-digit int-from-string limit: json.loads raises ValueError


def assert_same_feeds(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert list(got) == list(expected)
    for name, want in expected.items():
        assert got[name].dtype == want.dtype, name
        np.testing.assert_array_equal(got[name], want, strict=True)  # NaN == NaN here


def test_feeds_from_records_are_the_feeds_of_the_table() -> None:
    # The request path builds the graph's feeds straight from the records: they must be what
    # onnx_feeds makes of the (logged) table, nulls included, float32 rounding included.
    records = [
        GOOD,
        {"distance": None, "hour": 10**30, "origin": None},
        {**GOOD, "hour": 0.1, "origin": "Zürich"},
    ]
    inputs = records_to_inputs(records, COLUMNS, max_rows=10)
    assert inputs.rows == 3
    feeds = inputs.feeds()
    assert_same_feeds(feeds, onnx_feeds(records_to_table(records, COLUMNS, 10), COLUMNS))
    assert feeds["distance"].dtype == np.float32 and math.isnan(feeds["distance"][1, 0])
    assert feeds["origin"][:, 0].tolist() == ["JFK", "", "Zürich"]
    table = inputs.table()  # what the prediction log gets: float64 as sent, null as null
    assert table.column("distance").to_pylist() == [1200.5, None, 1200.5]
    assert table.column("hour").to_pylist() == [7.0, 1e30, 0.1]


def test_infer_feeds_are_the_feeds_of_the_table() -> None:
    body = {
        "inputs": [
            {
                "name": "distance",
                "datatype": "FP64",
                "shape": [3, 1],
                "data": [[1.5], [None], [float("nan")]],
            },
            {"name": "hour", "datatype": "INT32", "shape": [3], "data": [1, 2, 3]},
            {"name": "origin", "datatype": "BYTES", "shape": [3], "data": ["JFK", None, "東京"]},
        ]
    }
    request = oip_v2.parse_infer_request(json.dumps(body).encode())
    inputs = oip_v2.infer_inputs(request, COLUMNS, max_rows=10)
    assert_same_feeds(inputs.feeds(), onnx_feeds(oip_v2.infer_table(request, COLUMNS, 10), COLUMNS))


@pytest.mark.parametrize(
    "parse",
    [parse_records, oip_v2.parse_infer_request],
    ids=["predict", "infer"],
)
def test_a_json_integer_too_long_to_read_is_a_400(parse: Any) -> None:
    # Was a 500: json.loads raises a bare ValueError (not a JSONDecodeError) for it.
    with pytest.raises(RequestError) as info:
        parse(b'{"records": [{"distance": ' + HUGE_INT + b"}]}")
    assert info.value.status == 400 and "not valid JSON" in info.value.message
    assert len(info.value.message) < 300


def test_lone_surrogates_in_string_cells_are_a_422() -> None:
    # JSON's "\ud800" escape decodes to a lone surrogate, which Arrow and onnxruntime cannot encode:
    # it was a 500 ("model failed") on /v1 and /v2. A surrogate pair is one ordinary character.
    pair = parse_records(rb'[{"distance": 1, "hour": 2, "origin": "\ud83d\ude00"}]')
    assert records_to_inputs(pair, COLUMNS, 10).feeds()["origin"][0, 0] == "\U0001f600"
    message = reject(parse_records(rb'[{"distance": 1, "hour": 2, "origin": "ok\ud800"}]'))
    assert "record 0 column 'origin' must be valid Unicode text, got str 'ok\\ud800'" in message


def test_lone_surrogates_in_infer_requests_are_a_422() -> None:
    tensor = {"name": "origin", "datatype": "BYTES", "shape": [1], "data": ["\ud800"]}
    request = oip_v2.parse_infer_request(json.dumps({"inputs": [tensor]}).encode())
    with pytest.raises(RequestError) as info:
        oip_v2.infer_inputs(request, {"origin": "string"}, 10)
    assert info.value.status == 422 and "(BYTES) element 0 must be valid Unicode text" in info.value.message
    # The id is echoed in the answer, whose JSON encoding would fail on it.
    with pytest.raises(RequestError) as info:
        oip_v2.parse_infer_request(json.dumps({"id": "\udfff", "inputs": [tensor]}).encode())
    assert info.value.status == 422 and "'id' must be valid Unicode text" in info.value.message


def test_a_sticky_key_that_cannot_be_hashed_is_a_422() -> None:
    # The sticky key is hashed as UTF-8 (policy.key_point): a lone surrogate was a 500.
    user = {"name": "user", "datatype": "BYTES", "shape": [1], "data": ["\ud800"]}
    request = oip_v2.parse_infer_request(json.dumps({"inputs": [user]}).encode())
    with pytest.raises(RequestError, match="the sticky key 'user' must be valid Unicode text"):
        oip_v2.sticky_key(request, "user")
    request = oip_v2.parse_infer_request(
        json.dumps({"inputs": [user], "parameters": {"user": "u7"}}).encode()
    )
    assert oip_v2.sticky_key(request, "user") == "u7"


class _Session:
    """Stands in for an onnxruntime session that answers ``probabilities``."""

    def __init__(self, probabilities: list[float]) -> None:
        self.probabilities = np.asarray(probabilities, dtype=np.float32)

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.probabilities]


def test_a_non_finite_probability_is_a_model_failure_not_an_answer() -> None:
    # In-range inputs can still overflow inside a graph; NaN is no answer and no valid JSON either
    # (the reply used to fail after the request was counted as a success): the router treats the
    # version as failed on this request (falls back, or answers 500 with this message).
    model = LoadedModel.__new__(LoadedModel)
    model.spec, model.session = spec(), _Session([0.25, float("nan")])
    with pytest.raises(
        FloatingPointError, match=r"version '1' returned a non-finite probability \(nan\) for row 1"
    ):
        model.predict_inputs(records_to_inputs([GOOD, GOOD], COLUMNS, 10))
    model.session = _Session([0.25, 0.75])
    assert model.predict([GOOD, GOOD]) == [0.25, 0.75]


def test_openapi_declares_the_raw_bodies_without_parsing_them() -> None:
    from raymlops.serving.app import app

    document = app.openapi()
    for path in (
        "/v1/models/{name}/predict",
        "/v1/models/{name}/explain",
        "/v1/feedback",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ):
        body = document["paths"][path]["post"]["requestBody"]
        assert "schema" in body["content"]["application/json"], path
    # Declared only: the handlers still take the raw request (no body parameter for FastAPI to parse).
    for route in app.routes:
        if getattr(route, "methods", None) == {"POST"}:
            assert route.body_field is None, route.path
