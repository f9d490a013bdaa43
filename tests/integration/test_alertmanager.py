"""Alerts that act, end to end: a real Alertmanager (Debian ``prometheus-alertmanager``, on loopback,
stopped by its PID) sends its webhook to the receiver of ``raymlops alerts receive``, with a bearer token.

Three alerts are posted to Alertmanager's API: the champion's error rate (rule: rollback) rolls the real
Serve app back to the previous champion; an alert no rule names is only recorded; the same error-rate
alert labelled for another env is refused. Resolving the first is recorded and rolls nothing back again.
Each outcome is in the hash-chained audit log with the alert that caused it. The retrain action's job and
an unreachable job server are tests/unit/test_alert_actions.py.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from raymlops.config import compose
from raymlops.monitoring.alert_actions import AlertActions
from raymlops.monitoring.alert_receiver import AlertReceiver
from raymlops.registry.governance import Governance
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.security.audit import read_audit, verify_chain
from raymlops.serving import deploy
from raymlops.serving.operations import live_app, spec_from_registry
from tests.integration.test_rollout import CHAMPION, graph
from tests.integration.test_serving import PRE, ROWS, free_port

pytestmark = [pytest.mark.usefixtures("ray_local")]

APP = "alerts-test"
NAME = "flights"
TOKEN = "alert-token-1"


def _alertmanager(folder: Path, webhook: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        pytest.fail(
            "Alertmanager is missing: apt-get install -y --no-install-recommends prometheus-alertmanager"
        )
    config = folder / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: raymlops\n"
        "  group_by: ['...']\n"  # each alert its own group: its own notification
        "  group_wait: 100ms\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 1h\n"
        "receivers:\n"
        "  - name: raymlops\n"
        "    webhook_configs:\n"
        f"      - url: {webhook}\n"
        "        send_resolved: true\n"
        "        http_config:\n"
        "          authorization:\n"
        f"            credentials: {TOKEN}\n"
    )
    port = free_port()
    log = (folder / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={folder / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # no gossip port (9094 on every interface)
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"Alertmanager did not start: {(folder / 'alertmanager.log').read_text()[-2000:]}")


def _wait(condition: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Any, Governance, dict[str, str]]]:
    """Versions 1 and 2 registered; 1 was champion before 2; the app serves 2 with all of the traffic."""
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    cfg = compose([f"state_dir={tmp_path}", f"registry.model_name={NAME}", f"serve.app_name={APP}"])
    registry = ModelRegistry.from_config(cfg.registry)
    tags = {"raymlops.input_columns": ",".join(f"{k}:{v}" for k, v in PRE.input_columns.items())}
    versions = {}
    for label, bias in (("old", 0.0), ("new", 0.5)):
        run = registry.client.create_run(registry.experiment_id(), run_name=label)
        path = tmp_path / label / "model.onnx"
        path.parent.mkdir()
        onnx.save(compose_pipeline(PRE, graph(CHAMPION, bias=bias)), str(path))
        versions[label] = registry.register_version(
            model_name=NAME, run_id=run.info.run_id, model_files=[path], tags=tags
        ).version
    governance = Governance.from_config(cfg)
    governance.set_alias(NAME, "champion", versions["old"], why="first model")
    governance.set_alias(NAME, "champion", versions["new"], why="retrained")
    # Both versions loaded (the old one at 0%), so the rollback only moves the traffic.
    specs = [
        spec_from_registry(registry, NAME, versions["old"], weight=0.0),
        spec_from_registry(registry, NAME, versions["new"], weight=1.0),
    ]
    try:
        deploy(specs, app_name=APP, host="127.0.0.1", port=free_port(), timeout_s=90, env="dev")
        yield cfg, governance, versions
    finally:
        serve.shutdown()


def _post(alertmanager: str, alerts: list[dict[str, Any]]) -> None:
    response = httpx.post(f"{alertmanager}/api/v2/alerts", json=alerts, timeout=10)
    assert response.status_code == 200, response.text


def test_alertmanager_webhook_rolls_back_records_and_refuses(
    live: tuple[Any, Governance, dict[str, str]], tmp_path: Path
) -> None:
    cfg, governance, versions = live
    old, new = versions["old"], versions["new"]
    receiver = AlertReceiver(AlertActions(cfg, [f"state_dir={tmp_path}"]), port=0, token=TOKEN)
    receiver.start()
    alertmanager, am_url = _alertmanager(tmp_path, receiver.url)
    try:
        started = dt.datetime.now(dt.timezone.utc).isoformat()
        failing = {
            "labels": {"alertname": "RaymlopsHighErrorRate", "env": "dev", "model": NAME, "version": new},
            "annotations": {"summary": f"{NAME} v{new} fails 12% of requests"},
            "startsAt": started,
        }
        elsewhere = {**failing, "labels": {**failing["labels"], "env": "prod"}}
        quiet = {
            "labels": {"alertname": "RaymlopsNoTraffic", "env": "dev", "model": NAME},
            "startsAt": started,
        }
        _post(am_url, [failing, elsewhere, quiet])

        def alert_records() -> list[Any]:
            return [r for r in read_audit(cfg.security.audit_log) if r.action.startswith("alert.")]

        _wait(lambda: len(alert_records()) >= 3, "three alert records")
        by_outcome = {(r.action, r.outcome, r.details["labels"].get("env")): r for r in alert_records()}
        rollback = by_outcome[("alert.rollback", "ok", "dev")]
        assert rollback.details["from_version"] == new and rollback.details["to_version"] == old
        assert rollback.details["labels"]["alertname"] == "RaymlopsHighErrorRate"
        assert len(rollback.details["fingerprint"]) == 16 and rollback.details["status"] == "firing"
        assert "fails 12% of requests" in rollback.why
        assert ("alert.record", "ok", "dev") in by_outcome
        refused = by_outcome[("alert.rollback", "refused", "prod")]
        assert "env label is 'prod'" in refused.why
        # The rollback acted on the live app and the registry, once.
        assert live_app(APP).versions(NAME) == {old: 100.0, new: 0.0}
        assert governance.aliases(NAME)["champion"] == old
        answer = httpx.post(
            f"{live_app(APP).url}/v1/models/{NAME}/predict", json={"records": ROWS}, timeout=30
        )
        assert answer.status_code == 200 and answer.headers["model-version"] == old

        # Resolved: recorded, nothing rolled back again.
        _post(am_url, [{**failing, "endsAt": dt.datetime.now(dt.timezone.utc).isoformat()}])
        resolved = _wait(
            lambda: [r for r in alert_records() if r.details["status"] == "resolved"], "the resolved alert"
        )
        assert [(r.action, r.outcome) for r in resolved] == [("alert.record", "ok")]
        assert resolved[0].details["fingerprint"] == rollback.details["fingerprint"]
        assert [r.action for r in governance.history(NAME)].count("rollback") == 1
        assert governance.aliases(NAME)["champion"] == old
        assert verify_chain(cfg.security.audit_log) is None
    finally:
        alertmanager.terminate()
        alertmanager.wait(10)
        receiver.stop()
