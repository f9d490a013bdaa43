"""monitor: the monitor's report on the version this run just deployed, its key figures in the summary.

Not a default stage: add it after ``deploy`` (``stages=[...,deploy,monitor]`` or an experiment's list) to
see, at the end of the run, what the monitor sees of the new version's traffic so far (drift against its
training profile, the task's live metrics from feedback, latency). It never fails the run on an alert: the
report is written beside ``jobs/monitor.py``'s (``monitor.out_dir``) and the alerts are figures to read;
acting on them is the retrain triggers' job.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState

logger = logging.getLogger(__name__)

# The router writes its prediction log every flush_interval_s (2 s by default): waiting that long lets
# the deploy stage's own sample requests reach the window.
FLUSH_WAIT_S = 2.5


def key_figures(report: Any, version: str) -> dict[str, Any]:
    """The monitor's numbers for one version, flat, for the run summary."""
    from raymlops.monitoring.report import shown_metric

    entry = report.versions.get(version) or {}
    drift = entry.get("feature_drift") or {}
    psis = [f["psi"] for f in (drift.get("features") or {}).values() if f.get("psi") is not None]
    accuracy, latency = entry.get("accuracy") or {}, entry.get("latency") or {}
    figures: dict[str, Any] = {
        "version": version,
        "rows": sum((entry.get("rows") or {}).values()),
        "alerts": len([a for a in report.alerts if a.get("version") == version]),
        "drifted_features": len(drift.get("drifted_features") or []),
    }
    if psis:
        figures["max_feature_psi"] = round(max(psis), 4)
    psi = (entry.get("prediction_drift") or {}).get("psi")
    if psi is not None:
        figures["prediction_psi"] = round(psi, 4)
    name = shown_metric(accuracy)  # accuracy, or the task's primary metric where it has none
    live = (accuracy.get("live") or {}).get(name)
    if live is not None:
        figures[f"live_{name}"] = round(live, 4)
        figures["labelled_rows"] = accuracy.get("rows", 0)
    if latency.get("p50_ms") is not None:
        figures["p50_ms"], figures["p99_ms"] = round(latency["p50_ms"], 1), round(latency["p99_ms"], 1)
    return figures


class MonitorStage(Stage):
    name = "monitor"
    in_retrain = False

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        from raymlops.monitoring.monitor import run_monitor, write_outputs

        cfg = ctx.cfg
        model = str(cfg.registry.model_name)
        version = state.register.version if state.register is not None else None
        if state.deploy is not None and cfg.serve.prediction_log:
            time.sleep(FLUSH_WAIT_S)
        report = run_monitor(cfg, model=model, alias_or_version=version or str(cfg.retrain.alias))
        paths = write_outputs(report, cfg.monitor.out_dir)
        shown = version or next(iter(report.versions), "")
        figures = key_figures(report, shown)
        ctx.record(self.name, **figures, report=str(paths["report"]))
        ctx.lineage["monitor_report"] = str(paths["report"])
        for alert in report.alerts:
            logger.warning("monitor alert v%s %s: %s", alert["version"], alert["kind"], alert["detail"])
        return state
