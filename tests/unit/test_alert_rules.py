"""The shipped Prometheus alert rules: valid (``promtool check rules``), unit-tested for firing and not
firing (``promtool test rules``), and each one complete (``for:``, severity, annotations naming the model
and version).

Needs ``promtool`` (Debian package ``prometheus``; ``make test`` installs it). It fails, not skips,
without it: CI must run these checks.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
RULE_TESTS = PROMETHEUS / "alerts_test.yml"
EXPECTED = {
    "RaymlopsFeatureDrift",
    "RaymlopsPredictionDrift",
    "RaymlopsAccuracyDrop",
    "RaymlopsLiveMetricDrop",
    "RaymlopsHighErrorRate",
    "RaymlopsHighLatencyP99",
    "RaymlopsNoTraffic",
    "RaymlopsMonitorStale",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: install the Debian package 'prometheus' "
            "(`make system-deps`, or `apt-get install -y --no-install-recommends prometheus`)."
        )
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS)


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    done = run("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(EXPECTED)} rules found" in done.stdout


def test_promtool_test_rules() -> None:
    done = run("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_rule_is_complete(rule: dict[str, Any]) -> None:
    assert rule["alert"] in EXPECTED
    assert rule.get("for"), "a rule without `for:` pages on one bad scrape"
    assert rule["labels"]["severity"] in ("warning", "critical")
    annotations = rule["annotations"]
    assert set(annotations) >= {"summary", "description"}
    # The monitor-stale rule is per model; every other one names the model and the version.
    wanted = ["$labels.model"] + ([] if rule["alert"] == "RaymlopsMonitorStale" else ["$labels.version"])
    for key in ("summary", "description"):
        for label in wanted:
            assert label in annotations[key], f"{rule['alert']} {key} does not name {label}"


def test_every_rule_is_tested_firing_and_not_firing() -> None:
    assert {r["alert"] for r in rules()} == EXPECTED
    cases: dict[str, list[int]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(len(case.get("exp_alerts") or []))
    for name in EXPECTED:
        assert any(n > 0 for n in cases.get(name, [])), f"{name}: no test where it fires"
        assert any(n == 0 for n in cases.get(name, [])), f"{name}: no test where it stays quiet"
