"""How many requests a router and model replica take at once reaches the Serve deployments: Serve's
default of 5 makes its proxy back off and re-poll, halving throughput at 16 in flight (issue 18)."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

from raymlops.errors import ConfigError
from raymlops.serving.model_server import MAX_ONGOING_REQUESTS

# The module, not the function ``raymlops.serving`` re-exports under the same name.
deploy_module = importlib.import_module("raymlops.serving.deploy")

SPEC = {"name": "m", "onnx_path": "/nowhere/m.onnx", "data_version": "d", "input_columns": {"x": "float"}}
USER_CONFIG: dict[str, Any] = {
    "models": {
        "m": [
            {**SPEC, "version": "1", "placement": "deployment"},
            {**SPEC, "version": "2"},
        ]
    },
    "model_batch_size": 96,
}


@pytest.fixture
def deployed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What ``deploy_user_config`` hands to Serve, with Serve itself left out."""
    from ray import serve

    apps: list[Any] = []
    monkeypatch.setattr(serve, "start", lambda **_: None)
    monkeypatch.setattr(serve, "run_many", lambda targets, **_: apps.extend(t.target for t in targets))
    monkeypatch.setattr(deploy_module, "_check_http_port", lambda *_: None)
    monkeypatch.setattr(deploy_module, "_wait_ready", lambda *_: None)
    return apps


def _limits(application: Any) -> dict[str, int]:
    router = application._bound_deployment
    servers = [a._bound_deployment for a in router.init_args]
    return {d.name: d.max_ongoing_requests for d in (router, *servers)}


def test_router_and_model_servers_take_more_than_serves_default(deployed: list[Any]) -> None:
    deploy_module.deploy_user_config(USER_CONFIG, app_name="a", host="127.0.0.1", port=1)
    # A model server takes at least a batch (96 > 64); the co-located version has no deployment.
    assert _limits(deployed[0]) == {"router-a": MAX_ONGOING_REQUESTS, "model-m-v1": 96}
    assert MAX_ONGOING_REQUESTS > 5

    deploy_module.deploy_user_config(
        USER_CONFIG, app_name="a", host="127.0.0.1", port=1, max_ongoing_requests=200
    )
    assert _limits(deployed[1]) == {"router-a": 200, "model-m-v1": 200}


def test_a_limit_below_one_is_refused_before_serve(deployed: list[Any]) -> None:
    with pytest.raises(ConfigError, match="max_ongoing_requests"):
        deploy_module.deploy_user_config(
            USER_CONFIG, app_name="a", host="127.0.0.1", port=1, max_ongoing_requests=0
        )
    assert deployed == []


def test_the_config_default_is_the_deployments() -> None:
    from raymlops.config.schema import ServeConfig

    assert ServeConfig().max_ongoing_requests == MAX_ONGOING_REQUESTS
