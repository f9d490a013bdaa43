"""The Grafana dashboard and the alert rules query only metrics the project really exports.

The allowed names come from the code, not a list kept here: the serving ``METRICS`` as Ray's metrics
agent exports them (``ray_`` prefix; histograms as ``_bucket``/``_sum``/``_count``) and the monitor
exporter's ``GAUGES``. Every PromQL expression of the dashboard (panel targets, annotations, template
variables) and of ``alerts.yml`` is reduced to the metric names it selects, and each must be one of
those. The dashboard's expressions must also parse: ``promtool check rules`` reads them as recording
rules, with Grafana's variables replaced.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from raymlops.monitoring.exporter import GAUGES
from raymlops.serving.metrics import METRICS

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "raymlops.json"
RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"
PANELS = (  # what an operator needs on one screen (title -> must show)
    "Traffic split",
    "Request rate per version",
    "Rollouts: routing weight over time",
    "Latency p50 / p99",
    "Error rate",
    "Prediction distribution",
    "Shadow agreement",
    "Feature drift per feature",
    "Live accuracy vs test",
)

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?![\w:])")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
_LABEL_VALUES = re.compile(
    r"label_values\(\s*([^,()]*?(?:\{[^}]*\})?)\s*,\s*\w+\s*\)|label_values\(\s*\w+\s*\)"
)


def exported_names() -> set[str]:
    """Every series name the project exports, built from the metric definitions in the code."""
    names: set[str] = set()
    for metric in METRICS:
        exported = f"ray_{metric.name}"  # Ray's agent prefixes custom metrics; `_total` stays single
        if metric.kind == "histogram":
            names |= {f"{exported}_bucket", f"{exported}_sum", f"{exported}_count"}
        else:
            names.add(exported)
    return names | {gauge.name for gauge in GAUGES}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (Grafana variables allowed) selects."""
    text = _LABEL_VALUES.sub(lambda m: m.group(1) or "", expr)  # Grafana's label_values(metric, label)
    text = _STRING.sub(" ", text)
    text = _BRACES.sub(" ", text)  # label matchers
    text = _VARIABLE.sub(" ", text)
    while _BRACKETS.search(text):  # ranges and subqueries
        text = _BRACKETS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    found = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or match.group(0) in _KEYWORDS:
            continue  # a function or an aggregation, or an operator word
        found.add(match.group(0))
    return found


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[str]:
    exprs = [node["expr"] for node in _walk(dashboard()) if isinstance(node.get("expr"), str)]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def rule_exprs() -> list[str]:
    return [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_extractor_finds_metrics_not_functions_labels_or_variables() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (model, version, le) "
        '(rate(ray_raymlops_request_latency_seconds_bucket{route="served", model=~"$model"}'
        "[$__rate_interval]))) > 0.25 and on (model) "
        "time() - max by (model) (raymlops_monitor_last_run_timestamp_seconds offset 5m) > 3 * 3600 "
        "unless changes(x:recorded[2m:30s]) > 1e3"
    )
    assert metric_names(expr) == {
        "ray_raymlops_request_latency_seconds_bucket",
        "raymlops_monitor_last_run_timestamp_seconds",
        "x:recorded",
    }
    assert metric_names('label_values(ray_raymlops_routing_weight{model=~"$model"}, version)') == {
        "ray_raymlops_routing_weight"
    }
    assert metric_names("label_values(model)") == set()
    # A misspelt name is caught: it is not among the exported ones.
    assert metric_names("rate(ray_raymlops_request_total[5m])") - exported_names() == {
        "ray_raymlops_request_total"
    }


def test_allowed_names_come_from_the_code() -> None:
    names = exported_names()
    assert "ray_raymlops_requests_total" in names and "ray_raymlops_request_latency_seconds_bucket" in names
    assert "ray_raymlops_request_latency_seconds" not in names  # a histogram has no bare series
    assert "raymlops_feature_drift_psi" in names and "raymlops_monitor_last_run_timestamp_seconds" in names


@pytest.mark.parametrize("expr", dashboard_exprs())
def test_dashboard_queries_only_exported_metrics(expr: str) -> None:
    used = metric_names(expr)
    assert used, f"no metric found in {expr!r}"
    assert used <= exported_names(), f"{sorted(used - exported_names())} are not exported (in {expr!r})"


@pytest.mark.parametrize("expr", rule_exprs())
def test_alert_rules_query_only_exported_metrics(expr: str) -> None:
    used = metric_names(expr)
    assert used, f"no metric found in {expr!r}"
    assert used <= exported_names(), f"{sorted(used - exported_names())} are not exported (in {expr!r})"


def test_dashboard_has_the_panels_and_a_datasource_variable() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    panels = [p for p in board["panels"] if p["type"] != "row"]
    titles = [p["title"] for p in panels]
    for wanted in PANELS:
        assert any(t.startswith(wanted) for t in titles), f"no panel {wanted!r}; panels: {titles}"
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"][
            "w"
        ] <= 24
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and {"model", "version"} <= set(variables)
    # Every metric the project exports is on the dashboard somewhere (a new metric should get a panel),
    # except two the drift panel's colours stand for.
    shown = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert (
        not {n for n in exported_names() if not n.endswith(("_sum", "_count", "_bucket"))}
        - shown
        - {
            "raymlops_feature_drifted",  # the bar colours of the PSI panel show it
            "raymlops_feature_drift_ks",
        }
    )


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool is not installed: install the Debian package 'prometheus' (`make system-deps`)."
        )
    rules = []
    for index, expr in enumerate(e for e in dashboard_exprs() if not e.startswith("label_values")):
        concrete = expr.replace("$__rate_interval", "5m").replace("$model", ".*").replace("$version", ".*")
        rules.append({"record": f"dashboard:query_{index}", "expr": concrete})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
