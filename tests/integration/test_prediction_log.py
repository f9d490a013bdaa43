"""Prediction log, feedback and explanations on a real Serve router over real HTTP.

One router for the module: version 1 (packaged explainer) takes the traffic, version 2 (no explainer)
shadows every request; both log to a parquet root. The last test switches the log to a fresh root
with flush thresholds that never trigger, then deletes the application: the replica's graceful
shutdown must write every row.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from raymlops.monitoring.prediction_log import join_feedback, read_feedback, read_predictions
from raymlops.serving import ModelSpec, deploy
from raymlops.serving.policy import RoutePolicy, Shadow
from tests.integration.test_serving import PRE, ROWS, WEIGHTS, direct_probabilities, free_port, model_graph

APP = "prediction-log-test"
MODEL = "flights"
MAX_EXPLAIN_ROWS = 8


class TinyLogReg:
    """A fitted model in the shape ``export_pipeline`` expects: features @ w -> sigmoid."""

    def __init__(self, weights: list[float]) -> None:
        self.weights = np.asarray(weights, dtype=np.float32)

    def to_onnx(self, opset: int) -> Any:
        return model_graph(self.weights.tolist())

    def predict(self, x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(np.asarray(x, dtype=np.float32) @ self.weights)))


def raw_rows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "distance": rng.uniform(100, 3000, n),
            "hour": rng.integers(0, 24, n).astype(np.float64),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
        }
    )


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    root: Path
    specs: dict[str, ModelSpec]
    deploy: Callable[..., str]
    local_shap: threading.Thread  # compiles shap in this process while the replica starts


@pytest.fixture(scope="module")
def served(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from ray import serve

    from raymlops.evaluation.explain import OnnxExplainer, warm_up
    from raymlops.models.export import export_pipeline

    # The explain test compares with an explainer run here; its ~10 s numba compile overlaps the deploy.
    local_shap = threading.Thread(target=warm_up, daemon=True)
    local_shap.start()

    folder = tmp_path_factory.mktemp("registry")
    specs = {}
    for version in ("1", "2"):
        path = folder / f"v{version}" / "model.onnx"  # a registered version's folder
        export_pipeline(PRE, TinyLogReg(WEIGHTS[version]), raw_rows(64, 0), path, opset=17, tolerance=1e-5)
        specs[version] = ModelSpec(MODEL, version, str(path), f"delta-{version}", PRE.input_columns)
    OnnxExplainer(specs["1"].onnx_path, PRE.input_columns, raw_rows(200, 1), max_background=40).save(
        folder / "v1" / "explainer"
    )
    root = tmp_path_factory.mktemp("predlog")
    port = free_port()

    def deploy_with(prediction_log: dict[str, Any] | None) -> str:
        return deploy(
            [specs["1"], replace(specs["2"], weight=0.0)],
            app_name=APP,
            host="127.0.0.1",
            port=port,
            timeout_s=90,
            policies={MODEL: RoutePolicy(shadow=Shadow("2", 1.0))},
            shadow_max_in_flight=64,
            max_explain_rows=MAX_EXPLAIN_ROWS,
            prediction_log=prediction_log,
        )

    try:
        url = deploy_with({"root": str(root), "flush_rows": 1000, "flush_interval_s": 0.2})
        yield Served(url, port, root, specs, deploy_with, local_shap)
    finally:
        serve.shutdown()


def post(url: str, path: str, body: Any, timeout_s: float = 30.0) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=timeout_s)


def wait_for(read: Callable[[], pa.Table], rows: int, timeout_s: float = 20.0) -> pa.Table:
    deadline = time.monotonic() + timeout_s
    table = read()
    while table.num_rows < rows and time.monotonic() < deadline:
        time.sleep(0.1)
        table = read()
    return table


@dataclass(frozen=True)
class Sent:
    requests: list[list[dict[str, Any]]]
    answers: list[dict[str, Any]]
    started: dt.datetime
    log: pa.Table  # everything logged for them, served and shadow


@pytest.fixture(scope="module")
def sent(served: Served) -> Sent:
    """Three predict requests (nulls, an unseen category, an extra key); their logged rows."""
    started = dt.datetime.now(dt.UTC)
    requests = [ROWS, ROWS[:1], ROWS[1:3]]
    answers = []
    for rows in requests:
        response = post(served.url, f"/v1/models/{MODEL}/predict", {"records": rows})
        assert response.status_code == 200, response.text
        assert response.headers["model-version"] == "1"
        answers.append(response.json())
    total = sum(len(r) for r in requests)
    log = wait_for(lambda: read_predictions(served.root, MODEL, since=started), 2 * total)
    ids = {a["prediction_id"] for a in answers}
    return Sent(requests, answers, started, log.filter(pc.is_in(log["prediction_id"], pa.array(ids))))


def test_served_rows_are_logged_as_answered_with_their_features(served: Served, sent: Sent) -> None:
    table = sent.log.filter(pc.equal(sent.log["route"], "served"))
    assert table.schema.names == [
        "prediction_id",
        "row",
        "ts",
        "model",
        "version",
        "route",
        "probability",
        "label",
        "latency_ms",
        "f_distance",
        "f_hour",
        "f_origin",
    ]
    logged = {(r["prediction_id"], r["row"]): r for r in table.to_pylist()}
    assert len(logged) == table.num_rows == sum(len(r) for r in sent.requests)
    now = dt.datetime.now(dt.UTC)
    for rows, answer in zip(sent.requests, sent.answers, strict=True):
        for i, (record, predicted) in enumerate(zip(rows, answer["predictions"], strict=True)):
            row = logged[(answer["prediction_id"], i)]
            assert row["probability"] == predicted["probability"]  # exactly what the client got
            assert row["label"] == predicted["label"]
            assert (row["model"], row["version"]) == (MODEL, "1")
            assert row["f_distance"] == (None if record["distance"] is None else float(record["distance"]))
            assert row["f_hour"] == (None if record["hour"] is None else float(record["hour"]))
            assert row["f_origin"] == record["origin"]
            assert row["latency_ms"] > 0 and sent.started <= row["ts"] <= now
    # Every row of a request carries the request's latency and time.
    first = [logged[(sent.answers[0]["prediction_id"], i)] for i in range(len(ROWS))]
    assert len({(r["latency_ms"], r["ts"]) for r in first}) == 1


def test_shadow_rows_are_logged_with_the_shadow_versions_answer(served: Served, sent: Sent) -> None:
    table = sent.log.filter(pc.equal(sent.log["route"], "shadow"))
    assert set(table["version"].to_pylist()) == {"2"}
    expected = direct_probabilities(served.specs["2"].onnx_path, ROWS)
    rows = {r["row"]: r for r in table.to_pylist() if r["prediction_id"] == sent.answers[0]["prediction_id"]}
    assert sorted(rows) == [0, 1, 2, 3]
    np.testing.assert_allclose([rows[i]["probability"] for i in range(4)], expected, rtol=0, atol=1e-7)
    assert [rows[i]["label"] for i in range(4)] == [int(p >= 0.5) for p in expected]
    assert [rows[i]["f_origin"] for i in range(4)] == [r["origin"] for r in ROWS]
    assert table.num_rows == sum(len(r) for r in sent.requests)


def test_feedback_joins_to_its_predictions(served: Served, sent: Sent) -> None:
    first, second, third = (a["prediction_id"] for a in sent.answers)
    single = post(served.url, "/v1/feedback", {"prediction_id": second, "outcome": 1, "model": MODEL})
    assert single.status_code == 200 and single.json() == {"accepted": 1}
    batch = [
        {"prediction_id": first, "row": 0, "outcome": 0},
        {"prediction_id": first, "row": 3, "outcome": 1.0},
        {"prediction_id": third, "row": 1, "outcome": 1},
        {"prediction_id": "never-predicted", "outcome": 1},
    ]
    assert post(served.url, "/v1/feedback", {"feedback": batch}).json() == {"accepted": 4}
    time.sleep(0.01)  # the correction arrives strictly later
    correction = post(served.url, "/v1/feedback", [{"prediction_id": third, "row": 1, "outcome": 0}])
    assert correction.json() == {"accepted": 1}

    feedback = wait_for(lambda: read_feedback(served.root, MODEL, since=sent.started), 6)
    assert feedback.num_rows == 6
    served_rows = sent.log.filter(pc.equal(sent.log["route"], "served"))
    joined = join_feedback(served_rows, feedback)
    outcomes = {(r["prediction_id"], r["row"]): r["outcome"] for r in joined.to_pylist()}
    assert outcomes == {(second, 0): 1.0, (first, 0): 0.0, (first, 3): 1.0, (third, 1): 0.0}
    # The shadow rows of the same requests get the same outcomes: shadow accuracy comes for free.
    both = join_feedback(sent.log, feedback)
    assert both.num_rows == 8 and set(both["route"].to_pylist()) == {"served", "shadow"}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b'{"prediction_id": "x"', 400, "not valid JSON"),
        (b'{"prediction_id": "x"}', 422, "outcome is missing"),
        (b'{"prediction_id": "x", "outcome": ["yes"]}', 422, "outcome must be a JSON scalar"),
        (b'{"prediction_id": "x", "outcome": null}', 422, "outcome must be a JSON scalar"),
        (b'{"prediction_id": 7, "outcome": 1}', 422, "prediction_id must be"),
        (b'{"feedback": [{"prediction_id": "x", "outcome": 1, "row": -2}]}', 422, "row must be"),
        (b"[]", 422, "feedback is empty"),
    ],
)
def test_bad_feedback_is_a_4xx_with_an_error(served: Served, body: bytes, status: int, fragment: str) -> None:
    response = httpx.post(f"{served.url}/v1/feedback", content=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_explain_is_additive_and_matches_the_packaged_explainer(served: Served) -> None:
    from raymlops.evaluation.explain import load_explainer
    from raymlops.serving.protocols.v1 import records_to_table

    rows = [{k: v for k, v in r.items() if k in PRE.input_columns} for r in ROWS]
    response = post(served.url, f"/v1/models/{MODEL}/explain", {"records": rows}, timeout_s=120)
    assert response.status_code == 200, response.text
    assert response.headers["model-version"] == "1" and response.headers["data-version"] == "delta-1"
    body = response.json()
    assert response.headers["prediction-id"] == body["prediction_id"]
    assert (body["method"], body["output_space"]) == ("permutation", "probability")
    explanations = body["explanations"]
    assert len(explanations) == len(rows)
    predictions = np.asarray([e["prediction"] for e in explanations])
    np.testing.assert_allclose(
        predictions, direct_probabilities(served.specs["1"].onnx_path, ROWS), atol=1e-6
    )
    for e in explanations:
        assert set(e["shap"]) == set(PRE.input_columns)
        assert sum(e["shap"].values()) + e["base_value"] == pytest.approx(e["prediction"], abs=1e-5)

    served.local_shap.join()
    onnx_path = served.specs["1"].onnx_path
    local = load_explainer(Path(onnx_path).parent / "explainer", onnx_path)
    expected = local.explain(records_to_table(rows, PRE.input_columns, 100)).records()
    for got, want in zip(explanations, expected, strict=True):
        assert got["base_value"] == pytest.approx(want["base_value"], abs=1e-9)
        for column, value in want["shap"].items():
            assert got["shap"][column] == pytest.approx(value, abs=1e-9)

    too_many = post(served.url, f"/v1/models/{MODEL}/explain", rows * 3)
    assert too_many.status_code == 422 and "max_explain_rows=8" in too_many.json()["error"]


def test_explain_a_version_without_explainer_is_404(served: Served) -> None:
    response = post(served.url, f"/v1/models/{MODEL}/explain?version=2", [ROWS[0]])
    assert response.status_code == 404
    assert "has no explainer" in response.json()["error"] and response.headers["model-version"] == "2"
    unknown = post(served.url, f"/v1/models/{MODEL}/explain?version=9", [ROWS[0]])
    assert unknown.status_code == 404 and "Unknown version '9'" in unknown.json()["error"]


def test_feedback_without_a_prediction_log_says_what_is_missing(served: Served) -> None:
    served.deploy(None)
    response = post(served.url, "/v1/feedback", {"prediction_id": "x", "outcome": 1})
    assert response.status_code == 409 and "prediction_log" in response.json()["error"]


def test_nothing_is_lost_when_the_replica_shuts_down(
    served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Last in the module: it deletes the application."""
    from ray import serve

    root = tmp_path_factory.mktemp("shutdown-log")
    # Thresholds that never trigger: only the shutdown path can write these rows.
    served.deploy({"root": str(root), "flush_rows": 100_000, "flush_interval_s": 3600.0})
    n = 40
    ids = []
    with httpx.Client(base_url=served.url, timeout=30) as client:
        for i in range(n):
            response = client.post(f"/v1/models/{MODEL}/predict", json=[ROWS[i % 4]])
            assert response.status_code == 200, response.text
            ids.append(response.headers["prediction-id"])
    assert list(root.rglob("*.parquet")) == []  # all still buffered in the replica
    serve.delete(APP)
    table = wait_for(lambda: read_predictions(root, MODEL), 2 * n, timeout_s=10)
    served_rows = table.filter(pc.equal(table["route"], "served"))
    assert sorted(served_rows["prediction_id"].to_pylist()) == sorted(ids)  # exactly n, none twice
    shadow_rows = table.filter(pc.equal(table["route"], "shadow"))
    assert sorted(shadow_rows["prediction_id"].to_pylist()) == sorted(ids)
