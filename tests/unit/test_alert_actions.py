"""Alertmanager's webhook receiver over real HTTP, without Ray: payload checks (400, never 500), the env
guard (403, audited), record and resolved alerts audited once (retries and a restarted receiver are
answered, not acted on again), the bearer token (401, audited), and the retrain job a firing alert
submits (its entrypoint, id and environment; an unreachable job server is a 503 Alertmanager retries).
The rollback action and a real Alertmanager: tests/integration/test_alertmanager.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from raymlops.config import compose
from raymlops.errors import ConfigError
from raymlops.monitoring.alert_actions import Alert, AlertActions, AlertRule, retrain_job
from raymlops.monitoring.alert_receiver import AlertReceiver
from raymlops.security.audit import read_audit, verify_chain
from tests.conftest import free_port


def alert(
    name: str, *, env: str | None = "dev", status: str = "firing", fp: str = "f1", **labels: str
) -> dict:
    return {
        "status": status,
        "labels": {"alertname": name, **({"env": env} if env else {}), **labels},
        "annotations": {"summary": f"{name} summary"},
        "startsAt": "2026-12-07T06:00:00.5Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fp,
    }


def payload(*alerts: dict) -> dict:
    return {"version": "4", "status": alerts[0]["status"], "receiver": "raymlops", "alerts": list(alerts)}


@pytest.fixture(scope="module")
def composed() -> Any:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the job server is unreachable
    return compose([f"alerts.retrain.address={dead}"])


@pytest.fixture
def cfg(composed: Any, tmp_path: Path) -> Any:
    """The job config with its own state_dir (so its own audit log), without composing again."""
    from omegaconf import OmegaConf

    own = composed.copy()
    OmegaConf.update(own, "state_dir", str(tmp_path))
    return own


@pytest.fixture
def receiver(cfg: Any) -> Iterator[AlertReceiver]:
    server = AlertReceiver(AlertActions(cfg, ["env=dev"]), port=0)
    server.start()
    yield server
    server.stop()


def alert_records(cfg: Any) -> list[Any]:
    return [r for r in read_audit(cfg.security.audit_log) if r.action.startswith("alert.")]


def test_webhook_records_refuses_and_never_acts_twice(cfg: Any, receiver: AlertReceiver) -> None:
    url = receiver.url
    with httpx.Client(timeout=10) as client:
        assert client.get(url.replace("/alerts", "/healthz")).text == "ok"
        # Malformed payloads: 400 naming what is wrong, nothing audited.
        for body, message in [
            (b"{not json", "not JSON"),
            (b'{"version": "4", "alerts": {}}', "'alerts' must be a list"),
            (b'{"version": "3", "alerts": []}', "only '4'"),
            (
                b'{"alerts": [{"status": "firing", "labels": {"alertname": "A"}, "startsAt": "t"}]}',
                "fingerprint",
            ),
            (b'{"alerts": [{"status": "firing", "labels": {"alertname": 1}}]}', "labels must be an object"),
        ]:
            response = client.post(url, content=body)
            assert response.status_code == 400 and message in response.json()["error"], response.text
        assert client.post(url.replace("/alerts", "/other"), json=payload(alert("A"))).status_code == 404
        assert alert_records(cfg) == []

        # An alert no rule names: recorded; the same notification again (a retry): answered, not recorded.
        first = client.post(url, json=payload(alert("SomethingOdd", model="m", version="3")))
        assert first.status_code == 200 and first.json()["alerts"][0]["result"] == "ok"
        again = client.post(url, json=payload(alert("SomethingOdd", model="m", version="3")))
        assert again.status_code == 200 and again.json()["alerts"][0]["result"] == "duplicate"
        # Resolved: recorded only, whatever the rule says (RaymlopsHighErrorRate would roll back).
        resolved = client.post(url, json=payload(alert("RaymlopsHighErrorRate", status="resolved", fp="f2")))
        assert resolved.status_code == 200 and resolved.json()["alerts"][0]["action"] == "record"
        # Another env, or none: refused (403: Alertmanager does not retry it); the others still run.
        mixed = client.post(
            url, json=payload(alert("Mine", fp="f3"), alert("RaymlopsHighErrorRate", env="prod", fp="f6"))
        )
        assert mixed.status_code == 403
        assert [a["result"] for a in mixed.json()["alerts"]] == ["ok", "refused"]
        assert "env label is 'prod'" in mixed.json()["alerts"][1]["message"]
        unlabelled = client.post(url, json=payload(alert("RaymlopsHighErrorRate", env=None, fp="f4")))
        assert unlabelled.status_code == 403 and "no env label" in unlabelled.json()["alerts"][0]["message"]
        # Retrain with the job server down: 503, audited as an error, not marked done (a retry runs it again).
        for _ in range(2):
            down = client.post(url, json=payload(alert("RaymlopsAccuracyDrop", fp="f5")))
            assert down.status_code == 503 and down.json()["alerts"][0]["result"] == "transient", down.text

    records = alert_records(cfg)
    assert [(r.action, r.outcome) for r in records] == [
        ("alert.record", "ok"),
        ("alert.record", "ok"),
        ("alert.record", "ok"),
        ("alert.rollback", "refused"),
        ("alert.rollback", "refused"),
        ("alert.retrain", "error"),
        ("alert.retrain", "error"),
    ]
    odd = records[0]
    assert odd.details["fingerprint"] == "f1" and odd.details["starts_at"] == "2026-12-07T06:00:00.5Z"
    assert odd.details["labels"] == {"alertname": "SomethingOdd", "env": "dev", "model": "m", "version": "3"}
    assert odd.target == "m (env=dev)" and odd.why == "alert SomethingOdd firing: SomethingOdd summary"
    assert records[1].details["status"] == "resolved"
    assert verify_chain(cfg.security.audit_log) is None

    # A restarted receiver reads what was handled from the audit log: no second action after a restart.
    restarted = AlertActions(cfg)
    status, [outcome] = restarted.handle(
        [Alert("SomethingOdd", "firing", {"env": "dev"}, {}, odd.details["starts_at"], "f1")]
    )
    assert (status, outcome.result) == (200, "duplicate")
    # A refusal is answered the same again (Alertmanager re-sends a 4xx group later), not audited again.
    refused = records[3].details
    again = Alert(refused["alertname"], "firing", refused["labels"], {}, refused["starts_at"], "f6")
    status, [outcome] = restarted.handle([again])
    assert (status, outcome.result, outcome.message) == (403, "refused", "already handled: refused")
    assert len(alert_records(cfg)) == len(records)


def test_a_bearer_token_is_required_when_set(cfg: Any) -> None:
    server = AlertReceiver(AlertActions(cfg), port=0, token="s3cret")
    server.start()
    try:
        body = payload(alert("SomethingOdd"))
        assert httpx.post(server.url, json=body).status_code == 401
        wrong = httpx.post(server.url, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "wrong bearer token" in wrong.json()["error"]
        right = httpx.post(server.url, json=body, headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200
    finally:
        server.stop()
    refusals = [r for r in read_audit(cfg.security.audit_log) if r.action == "authenticate"]
    assert [(r.target, r.outcome, r.why) for r in refusals] == [
        ("alerts", "refused", "no bearer token"),
        ("alerts", "refused", "wrong bearer token"),
    ]


def test_the_retrain_job_an_alert_submits() -> None:
    firing = Alert("RaymlopsAccuracyDrop", "firing", {"env": "prod"}, {}, "2026-12-07T06:00:00.5Z", "ab12")
    job = retrain_job(["env=prod", "state_dir=/data/x y"], firing, {"force": True}, "/data/x y")
    assert job["entrypoint"] == "python -m raymlops retrain --force env=prod 'state_dir=/data/x y'"
    # The same alert re-sent gets the same id: Ray's job server refuses a second job with it.
    assert (
        job["submission_id"]
        == "raymlops-alert-ab12-20261207T0600005Z"
        == retrain_job([], firing, {}, "")["submission_id"]
    )
    assert job["runtime_env"] == {"env_vars": {"RAYMLOPS_HOME": "/data/x y", "RAYMLOPS_PROGRESS": "0"}}
    assert job["metadata"]["alertname"] == "RaymlopsAccuracyDrop"
    uploaded = retrain_job([], firing, {"working_dir": "/src"}, "/s")
    assert uploaded["runtime_env"]["working_dir"] == "/src" and "--force" not in uploaded["entrypoint"]
    with pytest.raises(ConfigError, match=r"'retrian' is no action\. Did you mean 'retrain'"):
        AlertRule("X", "retrian")
