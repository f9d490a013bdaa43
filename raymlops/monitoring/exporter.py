"""The monitor's results as Prometheus gauges (``prometheus_client``), for a textfile or a scrape.

Two ways out, both from one private ``CollectorRegistry`` (never the process-global one):

- :meth:`MonitorExporter.write_textfile`: an atomic ``.prom`` file for node_exporter's textfile
  collector (``--collector.textfile.directory``), what ``jobs/monitor.py`` writes after each run;
- :meth:`MonitorExporter.serve`: an HTTP ``/metrics`` endpoint for Prometheus to scrape
  (``monitor.serve_port``).

The names, help texts and label sets are the :data:`GAUGES` table: the alert rules and the Grafana
dashboard may only use these and the serving ``METRICS`` (tests check both). Unlike the serving
series, which Ray's metrics agent exports with a ``ray_`` prefix, these are exported as named here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raymlops.monitoring.report import MonitorReport

__all__ = ["GAUGES", "GaugeDef", "MonitorExporter"]

_VERSION = ("model", "version")
_FEATURE = ("model", "version", "feature")
_METRIC = ("model", "version", "metric")


@dataclass(frozen=True)
class GaugeDef:
    """One exported gauge: its Prometheus name, help text and label names."""

    name: str
    description: str
    labels: tuple[str, ...]


GAUGES = (
    GaugeDef(
        "raymlops_feature_drift_psi",
        "PSI of a raw input column in the monitored window vs the version's training profile.",
        _FEATURE,
    ),
    GaugeDef(
        "raymlops_feature_drift_ks",
        "KS statistic of a numeric input column in the window vs the version's training profile.",
        _FEATURE,
    ),
    GaugeDef(
        "raymlops_feature_drifted",
        "1 when the monitor judged the column drifted (psi or ks over its threshold, enough rows), else 0.",
        _FEATURE,
    ),
    GaugeDef(
        "raymlops_prediction_drift_psi",
        "PSI of the task's prediction statistic (binary: probabilities; multiclass: answered classes' "
        "shares; regression: values) vs the test split's (or the first monitored window's).",
        _VERSION,
    ),
    GaugeDef("raymlops_live_accuracy", "Accuracy on the window's rows that got feedback.", _VERSION),
    GaugeDef("raymlops_live_auc", "ROC AUC on the window's rows that got feedback (both classes).", _VERSION),
    GaugeDef("raymlops_test_accuracy", "test/accuracy logged in the version's training run.", _VERSION),
    GaugeDef("raymlops_test_auc", "test/auc logged in the version's training run.", _VERSION),
    GaugeDef("raymlops_accuracy_drop", "test/accuracy minus live accuracy (positive: worse live).", _VERSION),
    GaugeDef(
        "raymlops_feedback_rows", "Rows of the window joined to feedback (live metrics' sample).", _VERSION
    ),
    GaugeDef(
        "raymlops_live_metric",
        "A metric of the task on the window's rows that got feedback (binary: auc, accuracy, logloss; "
        "multiclass: accuracy, macro_f1, logloss; regression: rmse, mae, r2).",
        _METRIC,
    ),
    GaugeDef(
        "raymlops_test_metric", "The same metric logged for the test split in the version's run.", _METRIC
    ),
    GaugeDef(
        "raymlops_live_metric_worse_by",
        "How much worse the live metric is than the test split's, in the metric's units, the direction "
        "from the task (positive: worse live; accuracy: test - live; rmse: live - test).",
        _METRIC,
    ),
    GaugeDef(
        "raymlops_feedback_unknown_outcomes",
        "Feedback joined to the window whose outcome is no outcome of the version's task (an unknown class).",
        _VERSION,
    ),
    GaugeDef(
        "raymlops_monitor_window_rows",
        "Logged rows of the version in the monitored window, by route (served | shadow).",
        ("model", "version", "route"),
    ),
    GaugeDef(
        "raymlops_monitor_last_run_timestamp_seconds",
        "Unix time the monitor last finished a run for the model.",
        ("model",),
    ),
)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class MonitorExporter:
    """The :data:`GAUGES` of one process, set from monitor reports."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        self.gauges = {d.name: Gauge(d.name, d.description, d.labels, registry=self.registry) for d in GAUGES}
        self._labels = {d.name: d.labels for d in GAUGES}
        self._server: Any = None
        # model -> (gauge name, label values) of every series set for it, so a rerun can drop stale ones.
        self._series: dict[str, set[tuple[str, tuple[str, ...]]]] = {}

    def _set(self, name: str, value: Any, **labels: str) -> None:
        if _finite(value):
            values = tuple(labels[n] for n in self._labels[name])
            self.gauges[name].labels(*values).set(float(value))
            self._series.setdefault(labels["model"], set()).add((name, values))

    def update(self, report: MonitorReport | Mapping[str, Any]) -> None:
        """Set every gauge of ``report``'s model from it (a version gone from the report disappears)."""
        data = report.to_dict() if hasattr(report, "to_dict") else dict(report)
        model = str(data["model"])
        for name, values in self._series.pop(model, set()):  # this model's series of the last run
            self.gauges[name].remove(*values)
        for version, entry in data["versions"].items():
            ids = {"model": model, "version": str(version)}
            drift = entry.get("feature_drift", {})
            drifted = set(drift.get("drifted_features", []))
            for feature, values in drift.get("features", {}).items():
                self._set("raymlops_feature_drift_psi", values.get("psi"), **ids, feature=feature)
                self._set("raymlops_feature_drift_ks", values.get("ks"), **ids, feature=feature)
                self._set("raymlops_feature_drifted", int(feature in drifted), **ids, feature=feature)
            self._set("raymlops_prediction_drift_psi", entry.get("prediction_drift", {}).get("psi"), **ids)
            accuracy = entry.get("accuracy", {})
            self._set("raymlops_live_accuracy", accuracy.get("live", {}).get("accuracy"), **ids)
            self._set("raymlops_live_auc", accuracy.get("live", {}).get("auc"), **ids)
            self._set("raymlops_test_accuracy", accuracy.get("test", {}).get("accuracy"), **ids)
            self._set("raymlops_test_auc", accuracy.get("test", {}).get("auc"), **ids)
            self._set("raymlops_accuracy_drop", accuracy.get("drop", {}).get("accuracy"), **ids)
            self._set("raymlops_feedback_rows", accuracy.get("rows", 0), **ids)
            self._set("raymlops_feedback_unknown_outcomes", accuracy.get("unknown_outcomes", 0), **ids)
            for gauge, key in (
                ("raymlops_live_metric", "live"),
                ("raymlops_test_metric", "test"),
                ("raymlops_live_metric_worse_by", "drop"),
            ):
                for metric, value in (accuracy.get(key) or {}).items():
                    self._set(gauge, value, **ids, metric=metric)
            for route, rows in entry.get("rows", {}).items():
                self._set("raymlops_monitor_window_rows", rows, **ids, route=route)
        self._set("raymlops_monitor_last_run_timestamp_seconds", data["generated_at"], model=model)

    def text(self) -> str:
        """The exposition text of every gauge."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def write_textfile(self, path: str | os.PathLike[str]) -> None:
        """Write the gauges to ``path`` atomically (a temporary file renamed), creating its folder."""
        from prometheus_client import write_to_textfile

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write_to_textfile(os.fspath(path), self.registry)

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``host:port`` from a daemon thread; returns the port (0: a free one)."""
        from prometheus_client import start_http_server

        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def stop(self) -> None:
        """Stop serving (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
