"""Routing policy, shadowing, live stats and the Open Inference Protocol on a real Serve router.

One router application for the whole module; each test deploys the routing table it needs through
``deploy()``, which reconfigures the live replica in place (about a second), so the replica, its
sessions and its statistics carry over between tests: statistics are compared as deltas.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import numpy as np
import pytest

from raymlops.features.preprocess import FittedPreprocessor
from raymlops.serving import ModelSpec, deploy
from raymlops.serving.policy import RoutePolicy, Shadow, Sticky, key_point
from tests.integration.test_serving import PRE, ROWS, WEIGHTS, direct_probabilities, free_port, model_graph

pytestmark = [pytest.mark.usefixtures("ray_local")]

APP = "router-policy-test"
MODEL = "flights"
# A candidate that needs one more raw column than the champion: as a shadow it fails with 422 on
# requests that lack the column, and scores those that carry it.
PRE_DEST = replace(PRE, categorical=("origin", "dest"), categories=(("EWR", "JFK", "LGA"), ("ATL", "ORD")))


@dataclass(frozen=True)
class Router:
    url: str
    port: int
    specs: dict[str, ModelSpec]  # version -> spec (weight 1)
    applied: list[tuple[dict[str, float], RoutePolicy | None, dict[str, Any]]]  # deployed by apply()


def broken_graph() -> Any:
    """Loads, matches the spec, and fails on every run: Gather with an index past the 5 features."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["features", "index"], ["picked"], axis=1),
            helper.make_node("Sigmoid", ["picked"], ["probability"]),
        ],
        "fails_at_run_time",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 5])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None])],
        [numpy_helper.from_array(np.asarray(99, dtype=np.int64), "index")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.fixture(scope="module")
def router(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    folder = tmp_path_factory.mktemp("router-models")
    graphs: dict[str, tuple[FittedPreprocessor, Any]] = {
        "1": (PRE, model_graph(WEIGHTS["1"])),
        "2": (PRE, model_graph(WEIGHTS["2"])),
        "3": (PRE, model_graph([0.5, 0.5, -0.9, 0.2, 0.4])),
        "broken": (PRE, broken_graph()),
        "dest": (PRE_DEST, model_graph([0.8, -0.5, 0.3, -0.2, 0.1, 1.5, -1.5])),
    }
    specs = {}
    for version, (pre, graph) in graphs.items():
        path = folder / f"flights-{version}.onnx"
        onnx.save(compose_pipeline(pre, graph), str(path))
        specs[version] = ModelSpec(MODEL, version, str(path), f"delta-{version}", pre.input_columns)
    port = free_port()
    try:
        url = deploy([specs["1"]], app_name=APP, host="127.0.0.1", port=port, timeout_s=90)
        yield Router(url, port, specs, [({"1": 1.0}, None, {})])
    finally:
        serve.shutdown()


def apply(
    router: Router,
    weights: Mapping[str, float],
    policy: RoutePolicy | None = None,
    **settings: Any,
) -> None:
    """Deploy ``{version: weight}`` with an optional policy and router settings, in place."""
    wanted = (dict(weights), policy, settings)
    if router.applied and router.applied[-1] == wanted:
        return  # what is live already: skip the half second an unchanged deploy() takes
    specs = [replace(router.specs[v], weight=w) for v, w in weights.items()]
    policies = {MODEL: policy} if policy else None
    deploy(
        specs, app_name=APP, host="127.0.0.1", port=router.port, timeout_s=60, policies=policies, **settings
    )
    router.applied.append(wanted)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any


def send_many(
    url: str, requests: Sequence[tuple[str, Any, Mapping[str, str]]], concurrency: int = 4
) -> list[Answer]:
    """POST each ``(path, json, headers)`` with at most ``concurrency`` in flight; answers in order.

    Four in flight keeps the load modest on 2 cores. (At Serve's default ``max_ongoing_requests`` of 5,
    16 in flight halved the throughput; the router now takes 64 at once, ``MAX_ONGOING_REQUESTS``.)
    """

    async def run() -> list[Answer]:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=30.0) as client:

            async def one(path: str, payload: Any, headers: Mapping[str, str]) -> Answer:
                async with gate:
                    response = await client.post(path, json=payload, headers=dict(headers))
                    return Answer(response.status_code, response.headers, response.json())

            return await asyncio.gather(*(one(*r) for r in requests))

    return asyncio.run(run())


def predict(rows: list[dict[str, Any]], headers: Mapping[str, str] | None = None) -> tuple[str, Any, Mapping]:
    return (f"/v1/models/{MODEL}/predict", {"records": rows}, headers or {})


def stats(router: Router) -> dict[str, Any]:
    response = httpx.get(f"{router.url}/v1/models/{MODEL}/stats")
    assert response.status_code == 200, response.text
    return response.json()


def probabilities(answer: Answer) -> list[float]:
    return [p["probability"] for p in answer.body["predictions"]]


def test_weighted_split_follows_weights_and_stats_count_it(router: Router) -> None:
    apply(router, {"1": 0.8, "2": 0.2})
    before = stats(router)["versions"]
    n = 1000
    answers = send_many(router.url, [predict([ROWS[i % 4]]) for i in range(n)])
    assert {a.status for a in answers} == {200}
    versions = Counter(a.headers["model-version"] for a in answers)
    assert set(versions) == {"1", "2"}
    sigma = math.sqrt(n * 0.2 * 0.8)
    assert abs(versions["2"] - 0.2 * n) <= 4 * sigma, versions
    expected = {v: direct_probabilities(router.specs[v].onnx_path, ROWS) for v in ("1", "2")}
    for i, answer in enumerate(answers[:40]):
        version = answer.headers["model-version"]
        assert answer.headers["data-version"] == f"delta-{version}"
        assert answer.headers["prediction-id"] == answer.body["prediction_id"]
        np.testing.assert_allclose(probabilities(answer), expected[version][i % 4 : i % 4 + 1], atol=1e-6)

    after = stats(router)
    assert after["model"] == MODEL and after["shadow"] is None and after["sticky"] is None
    for version in ("1", "2"):
        served = after["versions"][version]["served"]
        assert served["requests_total"] - before[version]["served"]["requests_total"] == versions[version]
        assert served["errors_total"] == before[version]["served"]["errors_total"]
        window = served["window"]
        assert window["latency_ms"]["p50"] > 0 and window["latency_ms"]["p99"] >= window["latency_ms"]["p50"]
        assert 0 < window["mean_probability"] < 1
        assert window["error_rate"] == 0.0
    assert after["versions"]["1"]["share"] == pytest.approx(0.8)


def test_sticky_header_pins_each_key_to_one_version(router: Router) -> None:
    apply(router, {"1": 0.5, "2": 0.5}, RoutePolicy(sticky=Sticky("header", "x-user-id")))
    keys = [f"user-{i}" for i in range(50)]
    answers = send_many(router.url, [predict([ROWS[0]], {"X-User-Id": k}) for k in keys * 5])
    assert {a.status for a in answers} == {200}
    seen: dict[str, set[str]] = {}
    for key, answer in zip(keys * 5, answers, strict=True):
        seen.setdefault(key, set()).add(answer.headers["model-version"])
    assert all(len(v) == 1 for v in seen.values()), seen
    assert {next(iter(v)) for v in seen.values()} == {"1", "2"}  # two keys can differ
    # The assignment is the documented hash, so any replica (or a restarted one) agrees.
    assert all(seen[k] == {"1" if key_point(MODEL, k) < 0.5 else "2"} for k in keys)
    # Without the key: the weighted random choice.
    unkeyed = send_many(router.url, [predict([ROWS[0]])] * 20)
    assert {a.headers["model-version"] for a in unkeyed} == {"1", "2"}


def test_sticky_field_reads_the_first_record(router: Router) -> None:
    apply(router, {"1": 0.5, "2": 0.5}, RoutePolicy(sticky=Sticky("field", "user_id")))
    keys = list(range(15))
    answers = send_many(router.url, [predict([{**ROWS[1], "user_id": k}]) for k in keys * 3])
    seen: dict[int, set[str]] = {}
    for key, answer in zip(keys * 3, answers, strict=True):
        assert answer.status == 200, answer.body
        seen.setdefault(key, set()).add(answer.headers["model-version"])
    assert all(v == {"1" if key_point(MODEL, str(k)) < 0.5 else "2"} for k, v in seen.items())


def _wait_for_shadow(router: Router, version: str, calls: int, timeout_s: float = 20) -> dict[str, Any]:
    """Stats once ``calls`` shadow calls of ``version`` have finished (they run after the answer)."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = stats(router)
        shadow = body["versions"][version]["shadow"]
        finished = (shadow["requests_total"] if shadow else 0) + body["shadow"]["dropped_total"]
        if finished >= calls or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_shadow_never_changes_the_answer_and_records_agreement(router: Router) -> None:
    apply(router, {"1": 1.0, "3": 0.0})
    off = send_many(router.url, [predict(ROWS)] * 10, concurrency=1)
    before = stats(router)["versions"]["3"]["shadow"]
    shadow_before = before["requests_total"] if before else 0
    apply(router, {"1": 1.0, "3": 0.0}, RoutePolicy(shadow=Shadow("3", 1.0)), shadow_max_in_flight=64)
    on = send_many(router.url, [predict(ROWS)] * 10, concurrency=1)
    assert [a.status for a in on] == [200] * 10
    assert {a.headers["model-version"] for a in on} == {a.headers["model-version"] for a in off} == {"1"}
    for a, b in zip(off, on, strict=True):
        assert probabilities(a) == probabilities(b)  # exactly: same session, same rows

    body = _wait_for_shadow(router, "3", shadow_before + 10)
    assert body["shadow"] == {
        "version": "3",
        "fraction": 1.0,
        "max_in_flight": 64,
        "in_flight": 0,
        "dropped_total": 0,
    }
    shadow = body["versions"]["3"]["shadow"]
    assert shadow["requests_total"] - shadow_before == 10 and shadow["errors_total"] == 0
    assert body["versions"]["3"]["served"]["requests_total"] == 0  # never answered a client
    p1 = direct_probabilities(router.specs["1"].onnx_path, ROWS)
    p3 = direct_probabilities(router.specs["3"].onnx_path, ROWS)
    agreement = shadow["agreement"]
    assert agreement["compared"] >= 10
    assert agreement["label_agreement"] == pytest.approx(np.mean((p1 >= 0.5) == (p3 >= 0.5)))
    assert agreement["mean_abs_diff"] == pytest.approx(np.mean(np.abs(p1 - p3)), abs=1e-6)
    assert shadow["window"]["latency_ms"]["p50"] > 0


@pytest.mark.parametrize(
    ("version", "extra", "code"),
    [("broken", {}, "500"), ("dest", {}, "422"), ("dest", {"dest": "ATL"}, None)],
    ids=["fails-at-run-time", "needs-a-missing-column", "needs-a-column-present"],
)
def test_a_failing_shadow_never_touches_served_answers(
    router: Router, version: str, extra: dict[str, Any], code: str | None
) -> None:
    apply(router, {"1": 1.0, version: 0.0}, RoutePolicy(shadow=Shadow(version, 1.0)), shadow_max_in_flight=64)
    before = stats(router)["versions"][version]["shadow"]
    rows = [{**row, **extra} for row in ROWS]
    answers = send_many(router.url, [predict(rows)] * 12, concurrency=4)
    assert [a.status for a in answers] == [200] * 12
    expected = direct_probabilities(router.specs["1"].onnx_path, ROWS)
    for answer in answers:
        assert answer.headers["model-version"] == "1"
        np.testing.assert_allclose(probabilities(answer), expected, atol=1e-6)
    body = _wait_for_shadow(router, version, before["requests_total"] + 12)
    shadow = body["versions"][version]["shadow"]
    calls = shadow["requests_total"] - before["requests_total"]
    assert calls + body["shadow"]["dropped_total"] == 12 and calls > 0
    if code is None:
        assert shadow["errors_total"] == before["errors_total"]
        assert shadow["agreement"]["compared"] > 0
    else:
        assert shadow["errors_total"] - before["errors_total"] == calls
        assert shadow["window"]["errors_by_code"][code] >= calls


def test_weights_change_under_load_without_a_failed_request(router: Router) -> None:
    apply(router, {"1": 1.0, "2": 0.0})
    replica = httpx.get(f"{router.url}/v1/models").json()["replica"]
    statuses: list[int] = []
    versions: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=router.url, timeout=30.0) as client:
            while not stop.is_set():
                response = client.post(f"/v1/models/{MODEL}/predict", json=[ROWS[0]])
                statuses.append(response.status_code)
                versions.append(response.headers.get("model-version", "?"))

    clients = [threading.Thread(target=load) for _ in range(2)]
    for thread in clients:
        thread.start()
    try:
        for weights in ({"1": 0.5, "2": 0.5}, {"1": 0.0, "2": 1.0}, {"1": 0.9, "2": 0.1}):
            apply(router, weights)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    after = httpx.get(f"{router.url}/v1/models").json()
    assert len(statuses) > 50
    assert set(statuses) == {200}, Counter(statuses)
    assert set(versions) == {"1", "2"}
    assert (after["replica"]["id"], after["replica"]["pid"]) == (replica["id"], replica["pid"])
    assert after["replica"]["config_generation"] == replica["config_generation"] + 3
    assert sorted((m["version"], m["weight"]) for m in after["models"]) == [("1", 0.9), ("2", 0.1)]


# ---- Open Inference Protocol v2 -------------------------------------------------------------------


@pytest.fixture
def oip_router(router: Router) -> Router:
    """Version 1 takes the traffic, version 2 is loaded with weight 0; bodies over 64 KiB refused."""
    apply(router, {"1": 1.0, "2": 0.0}, max_body_bytes=64 * 1024)
    return router


def test_oip_metadata_and_readiness(oip_router: Router) -> None:
    tritonclient = pytest.importorskip("tritonclient.http")
    client = tritonclient.InferenceServerClient(f"127.0.0.1:{oip_router.port}")
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "raymlops"
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "2")
    assert not client.is_model_ready(MODEL, "9") and not client.is_model_ready("nope")
    metadata = client.get_model_metadata(MODEL)
    assert metadata == {
        "name": MODEL,
        "versions": ["1", "2"],
        "platform": "onnx",
        "inputs": [
            {"name": "distance", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "hour", "datatype": "FP32", "shape": [-1, 1]},
            {"name": "origin", "datatype": "BYTES", "shape": [-1, 1]},
        ],
        "outputs": [{"name": "probability", "datatype": "FP32", "shape": [-1]}],
    }
    assert client.get_model_metadata(MODEL, "2")["versions"] == ["2"]
    response = httpx.get(f"{oip_router.url}/v2/models/{MODEL}/versions/9")
    assert response.status_code == 404 and "Valid choices: 1, 2" in response.json()["error"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_oip_infer_with_tritonclient_matches_onnxruntime(oip_router: Router, binary: bool) -> None:
    tritonclient = pytest.importorskip("tritonclient.http")
    client = tritonclient.InferenceServerClient(f"127.0.0.1:{oip_router.port}")
    inputs = []
    for column, kind in PRE.input_columns.items():
        if kind == "float":
            values = np.asarray([math.nan if r[column] is None else r[column] for r in ROWS], np.float32)
        else:
            values = np.asarray([(r[column] or "").encode() for r in ROWS], dtype=object)
        tensor = tritonclient.InferInput(column, [len(ROWS), 1], "FP32" if kind == "float" else "BYTES")
        inputs.append(tensor.set_data_from_numpy(values.reshape(-1, 1), binary_data=binary))
    for version in ("", "2"):  # routed (version 1 takes all), then version 2 by name despite weight 0
        result = client.infer(MODEL, inputs, model_version=version, request_id=f"req-{version}")
        served = version or "1"
        np.testing.assert_allclose(
            result.as_numpy("probability"),
            direct_probabilities(oip_router.specs[served].onnx_path, ROWS),
            atol=1e-6,
        )
        response = result.get_response()
        assert (response["model_name"], response["model_version"]) == (MODEL, served)
        assert response["id"] == f"req-{version}"


def test_oip_infer_raw_without_content_type_carries_headers(oip_router: Router) -> None:
    body = {
        "id": "abc",
        "inputs": [
            {"name": "distance", "datatype": "FP64", "shape": [2], "data": [1400.0, None]},
            {"name": "hour", "datatype": "INT32", "shape": [2, 1], "data": [[7], [23]]},
            {"name": "origin", "datatype": "BYTES", "shape": [2, 1], "data": ["JFK", "LGA"]},
            {"name": "ignored", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]},
        ],
    }
    request = httpx.Request("POST", f"{oip_router.url}/v2/models/{MODEL}/infer", content=json.dumps(body))
    assert "content-type" not in request.headers
    with httpx.Client() as client:
        response = client.send(request)
    assert response.status_code == 200, response.text
    answer = response.json()
    rows = [{"distance": 1400.0, "hour": 7, "origin": "JFK"}, {"distance": None, "hour": 23, "origin": "LGA"}]
    expected = direct_probabilities(oip_router.specs["1"].onnx_path, rows)
    assert answer["id"] == "abc"
    assert answer["outputs"][0]["name"] == "probability" and answer["outputs"][0]["shape"] == [2]
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, atol=1e-6)
    assert response.headers["model-name"] == MODEL and response.headers["model-version"] == "1"
    assert response.headers["data-version"] == "delta-1"
    assert response.headers["prediction-id"] == answer["parameters"]["prediction_id"]


GOOD = [
    {"name": "distance", "datatype": "FP32", "shape": [1, 1], "data": [1400.0]},
    {"name": "hour", "datatype": "FP32", "shape": [1, 1], "data": [7]},
    {"name": "origin", "datatype": "BYTES", "shape": [1, 1], "data": ["JFK"]},
]


def _with(index: int, **change: Any) -> str:
    inputs = [dict(t) for t in GOOD]
    inputs[index].update(change)
    return json.dumps({"inputs": inputs})


@pytest.mark.parametrize(
    ("path", "content", "status", "fragment"),
    [
        ("flights/infer", _with(2, datatype="FP32", data=[3.0]), 422, "'origin' must be BYTES"),
        (
            "flights/infer",
            _with(2, data=[float("nan")]),
            422,
            "element 0 must be a string or null, got float nan",
        ),
        ("flights/infer", _with(0, data=["far"]), 422, "'distance' element 0 must be a number"),
        ("flights/infer", _with(0, data=[1e39]), 422, "must be a finite float32 number"),
        ("flights/infer", _with(1, shape=[2, 1]), 422, "needs 2 element(s) but 'data' holds 1"),
        ("flights/infer", _with(1, shape=[1, 3], data=[1, 2, 3]), 422, "shape must be [N] or [N, 1]"),
        ("flights/infer", _with(1, datatype="BOOL"), 422, "datatype 'BOOL' is not supported"),
        ("flights/infer", json.dumps({"inputs": GOOD[:2]}), 422, "missing input tensor(s) 'origin'"),
        ("flights/infer", json.dumps({"inputs": []}), 422, "'inputs' must be a non-empty list"),
        ("flights/infer", '{"inputs": [', 400, "not valid JSON"),
        (
            "flights/infer",
            json.dumps({"inputs": GOOD, "outputs": [{"name": "x"}]}),
            422,
            "unknown output 'x'",
        ),
        (
            "flights/infer",
            json.dumps({"inputs": GOOD, "pad": "x" * 70_000}),
            413,
            "exceeds the limit of 65536",
        ),
        ("flight/infer", json.dumps({"inputs": GOOD}), 404, "Did you mean 'flights'"),
        ("flights/versions/7/infer", json.dumps({"inputs": GOOD}), 404, "Unknown version '7'"),
    ],
)
def test_oip_bad_requests_get_a_json_4xx(
    oip_router: Router, path: str, content: str, status: int, fragment: str
) -> None:
    response = httpx.post(f"{oip_router.url}/v2/models/{path}", content=content.encode())
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    if status in (400, 413, 422):  # a version had been chosen: the answer names it
        assert response.headers["model-version"] == "1"


def test_predict_body_limit_and_deep_nesting_are_4xx(oip_router: Router) -> None:
    too_big = httpx.post(f"{oip_router.url}/v1/models/{MODEL}/predict", json=[ROWS[0]] * 2000)
    assert too_big.status_code == 413 and "exceeds the limit" in too_big.json()["error"]
    deep = httpx.post(f"{oip_router.url}/v1/models/{MODEL}/predict", content=b"[" * 50_000)
    assert deep.status_code == 400 and "not valid JSON" in deep.json()["error"]


def _deployments() -> set[str]:
    from ray import serve

    return set(serve.status().applications[APP].deployments)


def test_deployment_placement_serves_through_a_batched_handle(router: Router) -> None:
    """A version in its own ModelServer deployment answers exactly as onnxruntime does, for requests of
    different sizes batched together, shadows, falls back when broken, and goes when dropped."""
    from raymlops.serving.model_server import deployment_name

    remote = {v: replace(router.specs[v], placement="deployment") for v in ("2", "broken")}
    router.applied.append(({}, None, {"placement": "deployment"}))  # the next apply() redeploys

    def redeploy(weights: Mapping[str, float], **settings: Any) -> None:
        specs = [replace(remote.get(v, router.specs[v]), weight=w) for v, w in weights.items()]
        deploy(specs, app_name=APP, host="127.0.0.1", port=router.port, timeout_s=90, **settings)

    redeploy({"1": 0.5, "2": 0.5}, model_batch_size=8, model_batch_wait_us=5000)
    assert deployment_name(remote["2"]) in _deployments()
    listed = httpx.get(f"{router.url}/v1/models").json()
    assert {(m["version"], m["placement"]) for m in listed["models"]} == {
        ("1", "colocated"),
        ("2", "deployment"),
    }
    # 1..4 rows per request, 8 in flight: several requests share one onnxruntime run and each gets
    # back exactly its own rows.
    bodies = [[ROWS[(i + j) % 4] for j in range(1 + i % 4)] for i in range(120)]
    answers = send_many(router.url, [predict(rows) for rows in bodies], concurrency=8)
    assert {a.status for a in answers} == {200}
    assert {a.headers["model-version"] for a in answers} == {"1", "2"}
    for rows, answer in zip(bodies, answers, strict=True):
        expected = direct_probabilities(router.specs[answer.headers["model-version"]].onnx_path, rows)
        np.testing.assert_allclose(probabilities(answer), expected, atol=1e-6)
    assert stats(router)["versions"]["2"]["served"]["window"]["error_rate"] == 0.0

    # A remote version that fails at run time: its clients are answered by the other version.
    redeploy({"1": 0.5, "broken": 0.5})
    assert deployment_name(remote["2"]) not in _deployments()  # dropped with its version
    answers = send_many(router.url, [predict([ROWS[i % 4]]) for i in range(40)], concurrency=8)
    assert {a.status for a in answers} == {200}
    fell_back = [a for a in answers if a.headers.get("fallback-from") == "broken"]
    assert fell_back and all(a.headers["model-version"] == "1" for a in fell_back)

    # A remote shadow: scored off the request path through the handle, agreement recorded.
    before = stats(router)["versions"].get("2", {}).get("shadow")
    shadow_before = before["requests_total"] if before else 0
    redeploy(
        {"1": 1.0, "2": 0.0}, policies={MODEL: RoutePolicy(shadow=Shadow("2", 1.0))}, shadow_max_in_flight=64
    )
    answers = send_many(router.url, [predict([ROWS[i % 4]]) for i in range(10)])
    assert {a.headers["model-version"] for a in answers} == {"1"}
    shadow = _wait_for_shadow(router, "2", shadow_before + 10)["versions"]["2"]["shadow"]
    assert shadow["requests_total"] - shadow_before == 10 and shadow["errors_total"] == 0
    p1 = direct_probabilities(router.specs["1"].onnx_path, ROWS)
    p2 = direct_probabilities(router.specs["2"].onnx_path, ROWS)
    sent = [i % 4 for i in range(10)]
    assert shadow["agreement"]["mean_abs_diff"] == pytest.approx(np.mean(np.abs(p1 - p2)[sent]), abs=1e-6)


def test_an_experiment_cannot_touch_a_prod_app(router: Router) -> None:
    """A live app records the env that deployed it; a job or operator of another env is refused before
    anything reaches Serve, and the app keeps serving what it served."""
    from raymlops.config import compose
    from raymlops.errors import DeploymentError
    from raymlops.serving.operations import check_app_env, deploy_from_config, live_app

    apply(router, {"1": 0.7, "2": 0.3}, env="prod")
    check_app_env(APP, "prod")
    with pytest.raises(DeploymentError, match="belongs to env=prod; this is env=dev"):
        check_app_env(APP, "dev")
    cfg = compose(
        ["env=dev", f"serve.app_name={APP}", f"serve.port={router.port}", "serve.prediction_log=false"]
    )
    with pytest.raises(DeploymentError, match="belongs to env=prod"):
        deploy_from_config(cfg, [router.specs["3"]])
    assert live_app(APP).versions(MODEL) == {"1": 0.7, "2": 0.3}
    answers = send_many(router.url, [predict([ROWS[0]])] * 20)
    assert {a.status for a in answers} == {200} and {a.headers["model-version"] for a in answers} <= {
        "1",
        "2",
    }
