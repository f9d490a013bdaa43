"""The monitor: drift, live accuracy and latency of one model's logged traffic, per model version.

:func:`run_monitor` reads a window ``[since, until)`` of the prediction log and, for every version
found there (or the one an alias or version number names), computes

- **feature drift** of each raw input column (the log's ``f_<column>`` columns) against the training
  data profile registered with the version (``profile.json``): the window's rows become a
  :class:`~raymlops.data.profile.Profile` through the same statistics pass the validate stage uses
  (:func:`~raymlops.data.stats.table_stats`: moments, value counts, quantile sketches) and are
  compared by :func:`~raymlops.data.drift.drift_report` (PSI + KS for numeric columns, PSI +
  chi-square for categorical ones);
- **prediction drift**: the task's prediction statistic (binary: the served probabilities; multiclass:
  the answered classes' shares, PSI and chi-square; regression: the values, PSI and KS) against a
  reference distribution: the version's test-split predictions when its model folder holds
  :data:`PREDICTION_PROFILE`, else the first window with at least ``monitor.min_rows`` rows this monitor
  saw for the version (stored under ``<out_dir>/references/``); the report says which;
- **live metrics** from feedback joined by prediction id, its outcomes turned into the version's targets
  by ``Task.outcome_targets`` (outcomes the task does not know are counted, not fatal): the task's
  ``metrics`` (binary: accuracy, AUC when both classes occur, log loss; multiclass: accuracy, macro-F1,
  log loss; regression: RMSE, MAE, R²), the ones the evaluate stage computes, against the ``test/``
  metrics logged in the version's MLflow run, each with how much worse live it is (the task's direction);
- **latency** p50/p99 per request and row/request counts per route, against ``monitor.slo``.

Drift or a live metric worse than test over the configured limits (``max_accuracy_drop``, ``max_auc_drop``;
``max_metric_drop`` for a primary metric without one of its own) is an *alert* (``report.ok`` is False;
``jobs/monitor.py`` exits 1); a latency or traffic SLO breach is a *warning*. Request errors are not
in the log: the error-rate alert works from the serving counters (``monitoring/prometheus/alerts.yml``).

A window whose files take more than ``monitor.ray_data_min_bytes`` on disk is read by Ray Data, one
task per file (:func:`~raymlops.data.arrow_read.read_arrow_dataset`); each task computes the partial
statistics of its rows (:func:`~raymlops.monitoring.window_stats.window_partials`) and the driver
merges them. A smaller window is read with
:func:`~raymlops.monitoring.prediction_log.read_predictions` and goes through the same function.

The parts: :mod:`~raymlops.monitoring.window` (bounds, reading), :mod:`~raymlops.monitoring.window_stats`
(the statistics pass), :mod:`~raymlops.monitoring.version_info` (what the registry holds of a version),
:mod:`~raymlops.monitoring.version_checks` (one version's checks), :mod:`~raymlops.monitoring.report`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from raymlops.errors import ConfigError, ModelNotFoundError
from raymlops.monitoring.report import MonitorReport
from raymlops.monitoring.version_checks import safe_name, version_entry
from raymlops.monitoring.version_info import VersionInfo, version_info
from raymlops.monitoring.window import iso, log_dataset, parse_instant, partials_with_ray
from raymlops.monitoring.window_stats import VersionPartial, merge_partials, window_partials

__all__ = ["run_monitor", "write_outputs"]

logger = logging.getLogger(__name__)


def run_monitor(
    cfg: Any,
    *,
    model: str | None = None,
    alias_or_version: str | None = None,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    log_root: str | os.PathLike[str] | None = None,
) -> MonitorReport:
    """Monitor ``model``'s logged traffic in ``[since, until)``; see the module docstring.

    Args:
        cfg: The job config (``monitor``, ``registry``, ``ray`` and ``evaluate.split`` are read).
        model: Registered model name, optionally ``name@alias`` / ``name@version``; default
            ``monitor.model``.
        alias_or_version: Monitor only the version this alias (or version number) names; None: every
            version with rows in the window.
        since, until: The window (datetimes or ISO strings; naive = UTC). Default ``until``: now;
            default ``since``: ``until - monitor.window``.
        log_root: The prediction log's root; default ``monitor.log_root``.

    Raises:
        ModelNotFoundError: ``alias_or_version`` names no version of ``model``.
        ConfigError: a bad window or selector.
    """
    from raymlops.data.validation import parse_duration
    from raymlops.monitoring.prediction_log import read_feedback, read_predictions
    from raymlops.registry.mlflow_registry import ModelRegistry

    m = cfg.monitor
    model, selector = _parse_selector(model or str(m.model), alias_or_version)
    end = parse_instant(until, "until") or dt.datetime.now(dt.UTC)
    start = parse_instant(since, "since") or end - parse_duration(str(m.window), "monitor.window")
    if start >= end:
        raise ConfigError("since", f"{iso(start)} is not before until {iso(end)}.")
    root = os.fspath(log_root if log_root is not None else m.log_root)
    registry = ModelRegistry.from_config(cfg.registry)
    wanted: str | None = None
    if selector is not None:
        if selector.isdigit():
            wanted = registry.version(model, selector).version  # ModelNotFoundError when unknown
        else:
            holder = registry.by_alias(model, selector)
            if holder is None:
                raise ModelNotFoundError(
                    f"{model}@{selector}", [f"{model}@{a}" for a in _aliases(registry, model)]
                )
            wanted = holder.version

    # Feedback arrives after its prediction: everything from the window's start on.
    feedback = read_feedback(root, model, since=start)
    dataset, row_filter, size = log_dataset(root, model, start, end)
    if dataset is not None and size > m.ray_data_min_bytes:
        read_with = "ray_data"
        partials = merge_partials(partials_with_ray(cfg, dataset, row_filter, feedback))
    else:
        read_with = "pyarrow"
        partials = window_partials(read_predictions(root, model, start, end), feedback)
    logger.info(
        "monitor window model=%s since=%s until=%s bytes=%d read_with=%s versions=%s",
        model, iso(start), iso(end), size, read_with, sorted(partials),
    )  # fmt: skip

    try:
        registered = {v.version: v for v in registry.versions(model)}
    except ModelNotFoundError:
        registered = {}
    versions = [wanted] if wanted is not None else sorted(partials, key=_version_key)
    split = str(cfg.evaluate.split) if "evaluate" in cfg else "test"
    window = f"{model} log [{iso(start)}, {iso(end)})"
    entries: dict[str, dict[str, Any]] = {}
    alerts: list[dict[str, str]] = []
    warnings: list[str] = []
    if not registered:
        warnings.append(f"{model} is not in the registry at {cfg.registry.tracking_uri}")
    if not partials:
        warnings.append(f"no rows of {model} logged under {root} in the window")
    for version in versions:
        partial = partials.get(version, VersionPartial())
        info = version_info(registry, model, version, split) if registered else VersionInfo()
        warnings += info.problems
        entry, found, warned = version_entry(m, model, version, partial, info, window)
        entry["aliases"] = list(registered[version].aliases) if version in registered else []
        entries[version] = entry
        alerts += found
        warnings += warned
    # A shadow version's agreement with the served answers on the same rows, and their latencies.
    from raymlops.monitoring.shadow_checks import registered_task, shadow_rows, shadow_section

    shadows = shadow_section(shadow_rows(root, model, start, end), lambda v: registered_task(registered, v))
    for version, section in shadows.items():
        if version in entries:
            entries[version]["shadow"] = section
    return MonitorReport(
        model=model,
        selector=selector,
        since=iso(start),
        until=iso(end),
        generated_at=time.time(),
        log_root=root,
        read_with=read_with,
        rows=sum(sum(p.rows.values()) for p in partials.values()),
        versions=entries,
        alerts=tuple(alerts),
        warnings=tuple(warnings),
        thresholds={
            "psi": m.psi_threshold,
            "ks": m.ks_threshold,
            "prediction_psi": m.prediction_psi_threshold,
            "min_rows": m.min_rows,
            "max_accuracy_drop": m.max_accuracy_drop,
            "max_auc_drop": m.max_auc_drop,
            "max_metric_drop": m.max_metric_drop,
            "min_feedback_rows": m.min_feedback_rows,
            "slo": {
                "latency_p50_ms": m.slo.latency_p50_ms,
                "latency_p99_ms": m.slo.latency_p99_ms,
                "min_requests": m.slo.min_requests,
            },
        },
    )


def _aliases(registry: Any, model: str) -> list[str]:
    try:
        return sorted({a for v in registry.versions(model) for a in v.aliases})
    except ModelNotFoundError:
        return []


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (2**31, version)


def _parse_selector(model: str, alias_or_version: str | None) -> tuple[str, str | None]:
    if alias_or_version is None and "@" in model:
        model, _, alias_or_version = model.partition("@")
    if not model:
        raise ConfigError("monitor.model", "names no model: use <name>[@<alias>|@<version>].")
    return model, alias_or_version or None


def write_outputs(report: MonitorReport, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``<out_dir>/<model>/report.json`` (+ a copy under ``history/``), ``summary.txt``,
    ``report.html`` and the Prometheus textfile ``<out_dir>/textfile/raymlops_monitor_<model>.prom``;
    returns the paths."""
    from raymlops.monitoring.exporter import MonitorExporter

    folder = Path(out_dir) / safe_name(report.model)
    (folder / "history").mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.to_dict(), indent=2, default=str, allow_nan=False)
    stamp = dt.datetime.fromtimestamp(report.generated_at, tz=dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    paths = {
        "report": folder / "report.json",
        "history": folder / "history" / f"report-{stamp}.json",
        "summary": folder / "summary.txt",
        "html": folder / "report.html",
        "prom": Path(out_dir) / "textfile" / f"raymlops_monitor_{safe_name(report.model)}.prom",
    }
    from raymlops.security.crypto import write_sensitive

    # The report names feature values (drift per category): encrypted when encryption is on. The
    # Prometheus textfile holds only figures and stays readable by the node exporter.
    for key in ("report", "history"):
        tmp = paths[key].with_suffix(".json.tmp")
        write_sensitive(tmp, text)
        tmp.replace(paths[key])
    write_sensitive(paths["summary"], report.summary() + "\n")
    from raymlops.monitoring.report_html import render_monitor_html

    write_sensitive(paths["html"], render_monitor_html(json.loads(text)))  # the same figures as a page
    exporter = MonitorExporter()
    exporter.update(report)
    exporter.write_textfile(paths["prom"])
    return paths
