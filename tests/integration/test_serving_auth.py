"""API keys and roles on a real Serve router over real HTTP.

One router for the module, deployed with auth on; tests that change the key table redeploy through
``deploy()``, which reconfigures the live replica in place (about a second).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
import pytest

from raymlops.security.keys import KeyStore, parse_key, router_auth
from raymlops.serving import ModelSpec, deploy
from tests.integration.test_serving import PRE, ROWS, WEIGHTS, direct_probabilities, free_port, model_graph

pytestmark = [pytest.mark.usefixtures("ray_local")]

APP = "auth-test"
MODEL = "flights"
PREDICT = f"/v1/models/{MODEL}/predict"
INFER = f"/v2/models/{MODEL}/infer"
INFER_BODY = {
    "inputs": [
        {"name": "distance", "datatype": "FP32", "shape": [1, 1], "data": [1400.0]},
        {"name": "hour", "datatype": "FP32", "shape": [1, 1], "data": [7]},
        {"name": "origin", "datatype": "BYTES", "shape": [1, 1], "data": ["JFK"]},
    ]
}


@dataclass
class Secured:
    url: str
    port: int
    spec: ModelSpec
    store: KeyStore
    viewer: str
    predictor: str
    admin: str
    live: dict[str, Any] = field(default_factory=dict)  # the auth table deployed last

    def apply(self, auth: dict[str, Any]) -> None:
        if auth != self.live:
            deploy([self.spec], app_name=APP, host="127.0.0.1", port=self.port, timeout_s=60, auth=auth)
            self.live = auth


@pytest.fixture(scope="module")
def secured(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    folder = tmp_path_factory.mktemp("auth")
    path = folder / "flights-1.onnx"
    onnx.save(compose_pipeline(PRE, model_graph(WEIGHTS["1"])), str(path))
    spec = ModelSpec(MODEL, "1", str(path), "delta-1", PRE.input_columns)
    store = KeyStore(folder / "api_keys.json")
    keys = [
        store.create(name, role) for name, role in [("ui", "viewer"), ("app", "predictor"), ("ops", "admin")]
    ]
    auth = router_auth(True, store.path)
    port = free_port()
    try:
        url = deploy([spec], app_name=APP, host="127.0.0.1", port=port, timeout_s=90, auth=auth)
        yield Secured(url, port, spec, store, *keys, live=auth)
    finally:
        serve.shutdown()


@pytest.fixture
def auth_on(secured: Secured) -> Secured:
    secured.apply(router_auth(True, secured.store.path))
    return secured


def key_id_of(key: str) -> str:
    parsed = parse_key(key)
    assert parsed is not None
    return parsed[0]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_health_is_open_and_the_rest_needs_a_key(auth_on: Secured) -> None:
    with httpx.Client(base_url=auth_on.url) as client:
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        for method, path in [("GET", "/v1/models"), ("GET", "/v2"), ("POST", PREDICT), ("POST", "/nowhere")]:
            answer = client.request(method, path, json={"records": ROWS[:1]})
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.json()["error"].startswith("missing API key")
            assert answer.headers["www-authenticate"].startswith("Bearer")
        wrong = f"rmk_{parse_key(auth_on.admin)[0]}_{'x' * 43}"  # type: ignore[index]
        answer = client.post(PREDICT, headers=bearer(wrong), json={"records": ROWS[:1]})
        assert answer.status_code == 401 and "invalid API key" in answer.json()["error"]


def test_viewer_reads_but_may_not_predict(auth_on: Secured) -> None:
    with httpx.Client(base_url=auth_on.url, headers=bearer(auth_on.viewer)) as client:
        assert client.get("/v1/models").status_code == 200
        assert client.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
        answer = client.post(PREDICT, json={"records": ROWS[:1]})
        assert answer.status_code == 403
        assert answer.json()["error"].startswith("role predictor needed, key has viewer")


def test_predictor_key_gets_the_right_answer(auth_on: Secured) -> None:
    expected = direct_probabilities(auth_on.spec.onnx_path, ROWS)
    answer = httpx.post(f"{auth_on.url}{PREDICT}", headers=bearer(auth_on.predictor), json={"records": ROWS})
    assert answer.status_code == 200, answer.text
    got = [p["probability"] for p in answer.json()["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert answer.headers["model-version"] == "1"
    infer = httpx.post(f"{auth_on.url}{INFER}", headers={"x-api-key": auth_on.predictor}, json=INFER_BODY)
    assert infer.status_code == 200, infer.text
    np.testing.assert_allclose(infer.json()["outputs"][0]["data"], expected[:1], atol=1e-6)
    assert httpx.get(f"{auth_on.url}/v1/models", headers=bearer(auth_on.predictor)).status_code == 200


def test_admin_key_can_do_everything(auth_on: Secured) -> None:
    with httpx.Client(base_url=auth_on.url, headers=bearer(auth_on.admin)) as client:
        for path in ["/v1/models", f"/v1/models/{MODEL}/stats", "/v2", f"/v2/models/{MODEL}"]:
            assert client.get(path).status_code == 200, path
        assert client.post(PREDICT, json={"records": ROWS[:1]}).status_code == 200
        assert client.post(INFER, json=INFER_BODY).status_code == 200
        missing = client.post("/nowhere", json={})  # past auth, the app's own 404
        assert missing.status_code == 404 and "error" in missing.json()


def test_revoked_key_is_refused_after_redeploy_without_restart(auth_on: Secured) -> None:
    key = auth_on.store.create("short-lived", "predictor")
    auth_on.apply(router_auth(True, auth_on.store.path))
    replica = httpx.get(f"{auth_on.url}/v1/models", headers=bearer(auth_on.admin)).json()["replica"]
    assert httpx.post(f"{auth_on.url}{PREDICT}", headers=bearer(key), json=ROWS[:1]).status_code == 200
    auth_on.store.revoke(key_id_of(key))
    auth_on.apply(router_auth(True, auth_on.store.path))
    refused = httpx.post(f"{auth_on.url}{PREDICT}", headers=bearer(key), json=ROWS[:1])
    assert refused.status_code == 401 and "unknown or revoked" in refused.json()["error"]
    assert (
        httpx.post(f"{auth_on.url}{PREDICT}", headers=bearer(auth_on.predictor), json=ROWS[:1]).status_code
        == 200
    )
    after = httpx.get(f"{auth_on.url}/v1/models", headers=bearer(auth_on.admin)).json()["replica"]
    assert after["pid"] == replica["pid"] and after["config_generation"] > replica["config_generation"]


def test_auth_off_needs_no_key(secured: Secured) -> None:
    secured.apply(router_auth(False, secured.store.path))
    answer = httpx.post(f"{secured.url}{PREDICT}", json={"records": ROWS[:1]})
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{secured.url}/v1/models").status_code == 200
