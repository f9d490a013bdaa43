"""The serving router on a real local Serve, over real HTTP, with a real composed ONNX graph."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from raymlops.errors import DeploymentError
from raymlops.features.preprocess import FittedPreprocessor
from raymlops.serving import ModelSpec, deploy, sample_requests

PRE = FittedPreprocessor(
    numeric=("distance", "hour"),
    means=(1000.0, 12.0),
    stds=(500.0, 5.0),
    categorical=("origin",),
    categories=(("EWR", "JFK", "LGA"),),
)
WEIGHTS = {"1": [0.8, -0.5, 0.3, -0.2, 0.1], "2": [-0.4, 0.9, 0.0, 0.6, -0.7]}  # per version, F = 5
ROWS = [
    {"distance": 1400.0, "hour": 7, "origin": "JFK"},
    {"distance": None, "hour": 23.5, "origin": "LGA", "ignored": "extra keys are fine"},
    {"distance": 250, "hour": None, "origin": None},
    {"distance": 3000.25, "hour": 0, "origin": "SFO"},  # a category not seen in training
]


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    specs: dict[str, ModelSpec]  # version -> spec


def model_graph(weights: list[float]) -> Any:
    """features [N, F] -> MatMul with a weight vector [F] -> Sigmoid -> probability [N]."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["probability"]),
        ],
        "tiny_logreg",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(weights)])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None])],
        [numpy_helper.from_array(np.asarray(weights, dtype=np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what this onnxruntime reads; onnx's default may be newer
    return model


def direct_probabilities(path: str, rows: list[dict[str, Any]]) -> np.ndarray:
    """onnxruntime on the same rows, feeds built by hand (not through the serving code)."""
    import onnxruntime as ort

    feeds: dict[str, np.ndarray] = {}
    for column in PRE.numeric:
        values = [math.nan if r[column] is None else r[column] for r in rows]
        feeds[column] = np.asarray(values, dtype=np.float32).reshape(-1, 1)
    for column in PRE.categorical:
        feeds[column] = np.asarray(
            ["" if r[column] is None else r[column] for r in rows], dtype=object
        ).reshape(-1, 1)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(["probability"], feeds)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """Two versions on disk, version 1 deployed once for the module; Serve shut down afterwards."""
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    folder = tmp_path_factory.mktemp("models")
    specs = {}
    for version, weights in WEIGHTS.items():
        path = folder / f"flights-v{version}.onnx"
        onnx.save(compose_pipeline(PRE, model_graph(weights)), str(path))
        specs[version] = ModelSpec(
            name="flights",
            version=version,
            onnx_path=str(path),
            data_version=f"delta-{version}",
            input_columns=PRE.input_columns,
            threshold=0.5,
        )
    try:
        port = free_port()
        url = deploy([specs["1"]], app_name="serving-test", host="127.0.0.1", port=port, timeout_s=60)
        yield Served(url, port, specs)
    finally:
        serve.shutdown()


def test_composed_graph_is_the_python_pipeline(served: Served) -> None:
    # The reference the HTTP answers are compared with must itself be right.
    import pyarrow as pa

    table = pa.Table.from_pylist([{k: r[k] for k in PRE.input_columns} for r in ROWS])
    expected = 1 / (1 + np.exp(-(PRE.transform(table) @ np.asarray(WEIGHTS["1"], dtype=np.float32))))
    np.testing.assert_allclose(direct_probabilities(served.specs["1"].onnx_path, ROWS), expected, atol=1e-6)


def test_predictions_match_onnxruntime_with_headers(served: Served) -> None:
    response = httpx.post(f"{served.url}/v1/models/flights/predict", json={"records": ROWS})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = direct_probabilities(served.specs["1"].onnx_path, ROWS)
    probabilities = [p["probability"] for p in body["predictions"]]
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
    assert [p["label"] for p in body["predictions"]] == [int(p >= 0.5) for p in probabilities]
    assert 0 in [p["label"] for p in body["predictions"]] and 1 in [p["label"] for p in body["predictions"]]
    assert (body["model_name"], body["model_version"]) == ("flights", "1")
    assert response.headers["model-name"] == "flights"
    assert response.headers["model-version"] == "1"
    assert response.headers["data-version"] == "delta-1"
    assert response.headers["prediction-id"] == body["prediction_id"]
    assert len(body["prediction_id"]) == 32 and int(body["prediction_id"], 16) >= 0


def test_bare_list_without_content_type(served: Served) -> None:
    request = httpx.Request(
        "POST", f"{served.url}/v1/models/flights/predict", content=json.dumps(ROWS[:2]).encode()
    )
    assert "content-type" not in request.headers
    with httpx.Client() as client:
        response = client.send(request)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


def test_sample_requests(served: Served) -> None:
    answers = sample_requests(served.url, "flights", ROWS[:2])
    assert [a["status_code"] for a in answers] == [200, 200]
    assert answers[0]["headers"]["model-version"] == "1"
    assert len(answers[1]["body"]["predictions"]) == 1


@pytest.mark.parametrize(
    ("path", "content", "status", "fragment"),
    [
        ("/v1/models/flight/predict", json.dumps([ROWS[0]]), 404, "Did you mean 'flights'"),
        ("/v1/models/nope/predict", json.dumps([ROWS[0]]), 404, "Valid choices: flights"),
        (
            "/v1/models/flights/predict",
            json.dumps([{"distance": 1, "origin": "JFK"}]),
            422,
            "missing column(s) 'hour'",
        ),
        (
            "/v1/models/flights/predict",
            json.dumps([{**ROWS[0], "hour": "7"}]),
            422,
            "column 'hour' must be a number",
        ),
        (
            "/v1/models/flights/predict",
            json.dumps([{**ROWS[0], "origin": 3}]),
            422,
            "column 'origin' must be a string",
        ),
        ("/v1/models/flights/predict", '{"records": [', 400, "not valid JSON"),
        ("/v1/models/flights/predict", "", 400, "not valid JSON"),
        ("/v1/models/flights/predict", '{"records": []}', 422, "records is empty"),
        ("/v1/models/flights/predict", '{"rows": []}', 422, "got an object with keys 'rows'"),
        ("/v1/nothing/here", "{}", 404, "Not Found"),
    ],
)
def test_bad_requests_get_a_json_error(
    served: Served, path: str, content: str, status: int, fragment: str
) -> None:
    response = httpx.post(f"{served.url}{path}", content=content.encode())
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_wrong_method_is_a_json_405(served: Served) -> None:
    response = httpx.get(f"{served.url}/v1/models/flights/predict")
    assert response.status_code == 405 and "error" in response.json()


def test_too_many_rows_is_a_422(served: Served) -> None:
    response = httpx.post(f"{served.url}/v1/models/flights/predict", json=ROWS[:1] * 10_001)
    assert response.status_code == 422 and "exceeds the limit of 10000" in response.json()["error"]


def test_health_and_model_listing(served: Served) -> None:
    assert httpx.get(f"{served.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{served.url}/v2/health/ready").json() == {"ready": True}
    listing = httpx.get(f"{served.url}/v1/models").json()
    assert [(m["name"], m["version"], m["input_columns"]) for m in listing["models"]] == [
        ("flights", "1", {"distance": "float", "hour": "float", "origin": "string"})
    ]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"onnx_path": "/nonexistent/flights.onnx"}, r"from /nonexistent/flights.onnx: .*No such file"),
        (
            {"input_columns": {"distance": "float", "hour": "float", "dest": "string"}},
            "does not match its spec",
        ),
        (
            {"input_columns": {"distance": "float", "hour": "string", "origin": "string"}},
            "does not match its spec",
        ),
    ],
)
def test_deploy_refuses_a_model_it_cannot_serve(
    served: Served, change: dict[str, Any], fragment: str
) -> None:
    from dataclasses import replace

    broken = replace(served.specs["2"], weight=0.0, **change)
    with pytest.raises(DeploymentError, match=fragment):
        deploy([served.specs["1"], broken], app_name="serving-test", host="127.0.0.1", port=served.port)
    # Refused before reaching Serve: the live application is untouched.
    assert [m["version"] for m in httpx.get(f"{served.url}/v1/models").json()["models"]] == ["1"]


def test_new_user_config_switches_version_without_restarting_the_replica(served: Served) -> None:
    from dataclasses import replace

    before = httpx.get(f"{served.url}/v1/models").json()["replica"]
    v1, v2 = served.specs["1"], served.specs["2"]
    try:
        deploy(
            [replace(v1, weight=0.0), replace(v2, weight=1.0)],
            app_name="serving-test",
            host="127.0.0.1",
            port=served.port,
            timeout_s=60,
        )
        after = httpx.get(f"{served.url}/v1/models").json()
        assert (after["replica"]["id"], after["replica"]["pid"]) == (before["id"], before["pid"])
        assert after["replica"]["config_generation"] == before["config_generation"] + 1
        assert sorted((m["version"], m["weight"]) for m in after["models"]) == [("1", 0.0), ("2", 1.0)]
        for _ in range(5):
            response = httpx.post(f"{served.url}/v1/models/flights/predict", json=ROWS)
            assert response.headers["model-version"] == "2"
            assert response.headers["data-version"] == "delta-2"
            probabilities = [p["probability"] for p in response.json()["predictions"]]
            np.testing.assert_allclose(
                probabilities, direct_probabilities(v2.onnx_path, ROWS), rtol=0, atol=1e-6
            )
    finally:
        deploy([v1], app_name="serving-test", host="127.0.0.1", port=served.port, timeout_s=60)
    assert httpx.post(f"{served.url}/v1/models/flights/predict", json=ROWS).headers["model-version"] == "1"
    assert httpx.get(f"{served.url}/v1/models").json()["replica"]["pid"] == before["pid"]


# ---- hardening: out-of-distribution inputs, rate limits (in place on the module's app) -------------

# The training profile of version 1, as ``ood.input_profile`` reduces a registered profile.json.
PROFILE = {
    "distance": {"q01": 100.0, "q99": 2900.0},
    "hour": {"q01": 0.0, "q99": 23.0},
    "origin": {"categories": ["EWR", "JFK", "LGA"]},
}


def test_ood_rows_are_flagged_then_rejected(served: Served) -> None:
    from dataclasses import replace

    checked = replace(served.specs["1"], input_profile=PROFILE)
    deploy_ = {"app_name": "serving-test", "host": "127.0.0.1", "port": served.port, "timeout_s": 60}
    try:
        deploy([checked], **deploy_)  # ood: enabled, action flag, margin 1 (the config's defaults)
        response = httpx.post(f"{served.url}/v1/models/flights/predict", json={"records": ROWS})
        assert response.status_code == 200, response.text
        # Row 3: 3000.25 is within 2900 + 2800; SFO was never seen in training.
        assert [p["ood"] for p in response.json()["predictions"]] == [[], [], [], ["origin"]]
        far = {"distance": 9000.0, "hour": 7, "origin": "JFK"}
        infer = {
            "inputs": [
                {
                    "name": c,
                    "datatype": "BYTES" if k == "string" else "FP32",
                    "shape": [2],
                    "data": [r[c] for r in (ROWS[0], far)],
                }
                for c, k in PRE.input_columns.items()
            ]
        }
        answer = httpx.post(f"{served.url}/v2/models/flights/infer", json=infer).json()
        assert answer["parameters"]["ood_rows"] == 1
        assert json.loads(answer["parameters"]["ood"]) == [[], ["distance"]]

        deploy([checked], ood={"action": "reject"}, **deploy_)
        refused = httpx.post(f"{served.url}/v1/models/flights/predict", json=[ROWS[0], far])
        assert refused.status_code == 422
        assert (
            "row 1 column 'distance': value 9000 is outside the training range [-2700, 5700]"
            in (refused.json()["error"])
        )
        assert refused.headers["model-version"] == "1"
        assert httpx.post(f"{served.url}/v1/models/flights/predict", json=[ROWS[0]]).status_code == 200
    finally:
        deploy([served.specs["1"]], **deploy_)
    # Without a profile the answers carry no flags, as before.
    plain = httpx.post(f"{served.url}/v1/models/flights/predict", json=[ROWS[3]]).json()
    assert "ood" not in plain["predictions"][0]


def test_rate_limit_answers_429_with_retry_after(served: Served) -> None:
    deploy_ = {"app_name": "serving-test", "host": "127.0.0.1", "port": served.port, "timeout_s": 60}
    try:
        # 0.2/s: the bucket cannot refill a token within the few milliseconds the test takes.
        deploy([served.specs["1"]], rate_limit={"requests_per_s": 0.2, "burst": 2}, **deploy_)
        with httpx.Client(base_url=served.url, timeout=10) as client:
            statuses = [client.post("/v1/models/flights/predict", json=[ROWS[0]]) for _ in range(3)]
            assert [r.status_code for r in statuses] == [200, 200, 429]
            limited = statuses[2]
            assert 1 <= int(limited.headers["retry-after"]) <= 5  # one token at 0.2/s
            assert "rate limit exceeded" in limited.json()["error"]
            assert client.get("/v1/models").status_code == 429  # every route but health
            assert client.get("/v2/health/ready").status_code == 200
    finally:
        deploy([served.specs["1"]], **deploy_)
    assert httpx.post(f"{served.url}/v1/models/flights/predict", json=[ROWS[0]]).status_code == 200
