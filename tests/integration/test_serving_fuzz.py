"""Fuzzing the router's OpenAPI schema with schemathesis: no request gets a 5xx or takes the replica down.

One real model (the composed graph of ``test_serving``) behind the router, with the prediction log
on so that ``/v1/feedback`` parses its bodies too, and auth off. Schemathesis reads the router's
OpenAPI document (whose request bodies the router declares with ``openapi_extra``) and sends every
operation valid and invalid requests over HTTP (its examples, coverage and fuzzing phases): path and
query parameters, unexpected methods, bodies. The config names the served model and version in the
path, always for POSTs and half the time otherwise, and a hook makes two in three fuzzed scoring
bodies carry the model's columns with arbitrary JSON values, so that requests reach validation and
scoring instead of stopping at a 404 or a missing column.

Every schemathesis check runs on every answer (not only "no 5xx"): response schema and status code
conformance against the document's declared answers and errors, content types, headers, and
positive/negative data acceptance (see CONFIG and the test for the two documented allowances).
The served version carries a training profile, so answers include the out-of-distribution flags
whose shape the document declares. The generated tests count their cases; the last test asserts
at least MIN_CASES ran.

The document is the app's, built in this process at collection: schemathesis' loader from a fixture
(``schemathesis.pytest.from_fixture``, which could load the live ``/openapi.json``) renames pytest
items through ``Function._nodeid``, which pytest 9 no longer has. A test checks that the live replica
serves exactly this document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import requests

from raymlops.serving import ModelSpec, deploy
from raymlops.serving.app import app
from tests.integration.test_serving import PRE, WEIGHTS, free_port, model_graph

schemathesis = pytest.importorskip("schemathesis")  # a dev extra

from hypothesis import HealthCheck, settings  # noqa: E402  (schemathesis brings hypothesis)
from hypothesis import strategies as st  # noqa: E402
from schemathesis.specs.openapi.checks import negative_data_rejection  # noqa: E402

APP = "serving-fuzz-test"
MODEL, VERSION = "flights", "1"
# The version is checked against a training profile, so that answers carry the `ood` flags too.
PROFILE = {"distance": {"q01": 100.0, "q99": 2900.0}, "origin": {"categories": ["EWR", "JFK", "LGA"]}}
MIN_CASES = 1000
CASES: list[int] = [0]  # requests sent by the generated tests, checked by the last test

# Any JSON value a client could put in a cell: lone surrogates (JSON's "\ud800" escapes) included.
# Integers stay under Python's 4300-digit str limit and NaN/inf are left out, because the client's
# JSON encoder refuses them (the unit tests send those raw).
ANY_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=2),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=1),
)
GOOD = {
    "float": st.none() | st.floats(-1e4, 1e4),
    "string": st.none() | st.sampled_from(["JFK", "LGA", "SFO"]),
}


def cell(kind: str) -> st.SearchStrategy[Any]:
    """A value for a column of ``kind``: three draws in four one the model takes, so whole requests score."""
    return st.integers(0, 3).flatmap(lambda i: GOOD[kind] if i else ANY_JSON)


def model_records() -> st.SearchStrategy[list[dict[str, Any]]]:
    record = st.fixed_dictionaries({column: cell(kind) for column, kind in PRE.input_columns.items()})
    return st.lists(record, min_size=1, max_size=4)


def model_tensors() -> st.SearchStrategy[dict[str, Any]]:
    datatypes = ["FP32", "FP64", "INT64", "UINT8", "BYTES"]

    def tensors(rows: int) -> st.SearchStrategy[dict[str, Any]]:
        own = {"float": "FP32", "string": "BYTES"}
        each = [
            st.fixed_dictionaries(
                {
                    "name": st.just(column),
                    "datatype": st.just(own[kind]) | st.sampled_from(datatypes),
                    "shape": st.sampled_from([[rows], [rows, 1]]),
                    "data": st.lists(cell(kind), min_size=rows, max_size=rows),
                }
            )
            for column, kind in PRE.input_columns.items()
        ]
        return st.tuples(*each).map(lambda inputs: {"inputs": list(inputs)})

    return st.integers(1, 4).flatmap(tensors)


# Requests that score (POST) always name the served model and version, so that every generated body
# gets past the 404 (schemathesis' coverage phase would name model "0"); the others name it half the time.
CONFIG = schemathesis.Config.from_dict(
    {
        "dictionaries": {"models": {"values": [MODEL]}, "versions": {"values": [VERSION]}},
        "parameters": {
            "path.name": {"dictionary": "models", "probability": 0.5},
            "path.version": {"dictionary": "versions", "probability": 0.5},
        },
        # Fuzzing-phase examples per operation (the coverage phase adds its own, ~150 for a body):
        # with those, over MIN_CASES in all, at about 10 ms a request.
        "generation": {"max-examples": 50, "database": "none"},
        # Every operation is also sent methods it does not take: two show the 405 as well as eight.
        "phases": {"coverage": {"unexpected-methods": ["put", "delete"]}},
        "checks": {
            # One document serves every model: which columns a model needs (and, with
            # serve.ood.action=reject, which values) is known only at run time, so a body valid by
            # the document may still be refused with 422. Likewise 400 for a tensor declaring
            # binary_data_size in a body without the binary part (framing the document cannot express).
            # Every other check keeps its defaults.
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "413", "422", "429", "503"]
            },
        },
        "operations": [
            {
                "include-method": "POST",
                "parameters": {"path.name": MODEL, "path.version": VERSION},
                "generation": {"max-examples": 120, "database": "none"},
            },
            {
                # Reads its body as /v2/models/{name}/infer does (which the coverage phase covers):
                # fuzzing alone here saves ~150 requests.
                "include-path": "/v2/models/{name}/versions/{version}/infer",
                "phases": {"coverage": {"enabled": False}},
            },
        ],
    }
)
API = schemathesis.openapi.from_dict(app.openapi(), config=CONFIG)


@API.hook
def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
    path = context.operation.path
    if path.endswith(("/predict", "/explain")):
        records = model_records()
        return st.one_of(st.just(body), records.map(lambda r: {"records": r}), records)
    if path.endswith("/infer"):
        return st.one_of(st.just(body), model_tensors())
    return st.just(body)


@dataclass(frozen=True)
class Fuzzed:
    url: str
    pid: int  # the replica's process when the module started
    session: requests.Session  # one keep-alive connection for all the generated requests


@pytest.fixture(scope="module")
def fuzzed(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    path = tmp_path_factory.mktemp("fuzz-model") / "flights.onnx"
    onnx.save(compose_pipeline(PRE, model_graph(WEIGHTS[VERSION])), str(path))
    spec = ModelSpec(MODEL, VERSION, str(path), "delta-1", PRE.input_columns, input_profile=PROFILE)
    log = {"root": str(tmp_path_factory.mktemp("fuzz-log")), "flush_interval_s": 0.5}
    try:
        url = deploy(
            [spec], app_name=APP, host="127.0.0.1", port=free_port(), timeout_s=90, prediction_log=log
        )
        pid = httpx.get(f"{url}/v1/models").json()["replica"]["pid"]
        with requests.Session() as session:
            yield Fuzzed(url, pid, session)
    finally:
        serve.shutdown()


def test_the_live_replica_serves_the_fuzzed_document(fuzzed: Fuzzed) -> None:
    assert httpx.get(f"{fuzzed.url}/openapi.json", timeout=30).json() == app.openapi()


@API.parametrize()
@settings(deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_server_error(case: Any, fuzzed: Fuzzed) -> None:
    CASES[0] += 1
    # No `checks=`: every check schemathesis has, response schema and status code conformance
    # included. But where flatmap_body swaps in the model's own records or tensors it does so in
    # negative generation too, so a case labelled "schema-violating" may carry a valid body that the
    # router rightly scores: negative_data_rejection would blame the router for the hook.
    hooked = case.operation.path.endswith(("/predict", "/explain", "/infer"))
    excluded = [negative_data_rejection] if hooked else []
    case.call_and_validate(base_url=fuzzed.url, session=fuzzed.session, timeout=30, excluded_checks=excluded)


def test_the_replica_survived_the_fuzzing(fuzzed: Fuzzed) -> None:
    answer = httpx.get(f"{fuzzed.url}/v1/models", timeout=30)
    assert answer.status_code == 200
    assert answer.json()["replica"]["pid"] == fuzzed.pid
    # And it still scores.
    record = {"distance": 1400.0, "hour": 7, "origin": "JFK"}
    scored = httpx.post(f"{fuzzed.url}/v1/models/{MODEL}/predict", json={"records": [record]}, timeout=30)
    assert scored.status_code == 200, scored.text


def test_enough_cases_ran(fuzzed: Fuzzed) -> None:
    print(f"\nschemathesis cases sent: {CASES[0]}")
    assert CASES[0] >= MIN_CASES, f"only {CASES[0]} generated cases ran; raise max-examples"
