"""Request validation and routing-table checks for serving; no Ray, no onnxruntime."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from raymlops.errors import ConfigError, RequestError
from raymlops.serving.onnx_model import parse_records, records_to_table
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
