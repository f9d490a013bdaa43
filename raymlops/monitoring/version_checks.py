"""The checks of one version's rows in a window: feature and prediction drift, live metrics, latency.

:func:`version_entry` gives the version's part of the report, with its alerts (drift, a live metric worse
than the test split's) and warnings (a latency or traffic SLO breach). What differs by task comes from
the version's ``Task``: the prediction statistic drift compares (binary: the probabilities; multiclass:
the answered classes' shares; regression: the values), the live metrics (``task.live_metrics()``, from
``task.metrics`` on the feedback turned into targets by ``task.outcome_targets``) and their direction.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from raymlops.data.profile import Profile
from raymlops.monitoring.feedback import feedback_targets, outcome_values
from raymlops.monitoring.prediction_log import FEATURE_PREFIX, log_pred
from raymlops.monitoring.version_info import PREDICTION_PROFILE, VersionInfo, statistic_column
from raymlops.monitoring.window import timestamp
from raymlops.monitoring.window_stats import VersionPartial, feature_drift

__all__ = ["ALERT_KINDS", "safe_name", "version_entry"]

# metric_drop: the task's primary metric worse than the test split's by more than monitor.max_metric_drop
# (a fraction of the test value), for a primary metric without an absolute limit (accuracy, auc) of its own.
ALERT_KINDS = ("feature_drift", "prediction_drift", "accuracy_drop", "auc_drop", "metric_drop")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """``name`` as one file-name part: characters other than letters, digits, ``._-`` become ``_``."""
    return _SAFE.sub("_", name)


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _reference_path(out_dir: str, model: str, version: str) -> Path:
    return Path(out_dir) / "references" / safe_name(model) / f"v{safe_name(version)}" / PREDICTION_PROFILE


def _task(info: VersionInfo) -> Any:
    from raymlops.tasks.codec import LEGACY_TASK

    return info.task if info.task is not None else LEGACY_TASK


def _prediction_drift(
    m: Any, model: str, version: str, partial: VersionPartial, info: VersionInfo, window: str
) -> dict[str, Any]:
    from raymlops.data.drift import drift_report

    rows = sum(partial.rows.values())
    column = statistic_column(_task(info))
    stats = partial.columns.get(column)
    if stats is None or stats.non_null == 0:
        return {"reference": None, "psi": None, "drifted": False, "note": "no predictions in the window"}
    current = Profile.from_stats({column: stats}, rows, window, [column])
    stored = _reference_path(m.out_dir, model, version)
    established = False
    if info.prediction_reference is not None:
        reference, kind = info.prediction_reference, "test_split"
        where = info.prediction_reference_path or PREDICTION_PROFILE
    elif stored.exists() and column in (loaded := Profile.load(stored)).columns:
        reference, kind, where = loaded, "first_window", str(stored)
    elif rows >= m.min_rows:
        current.save(stored)  # this window is the reference from now on
        reference, kind, where, established = current, "first_window", str(stored), True
    else:
        return {
            "reference": None,
            "psi": None,
            "drifted": False,
            "note": f"no test-split reference and {rows} rows < min_rows {m.min_rows} to set one",
        }
    report = drift_report(reference, current, psi_threshold=m.prediction_psi_threshold, ks_threshold=1.0)
    entry = report["features"][column]
    judged = rows >= m.min_rows
    out = {
        "statistic": column,
        "reference": kind,
        "reference_path": where,
        "reference_data_version": reference.data_version,
        "established_now": established,
        "psi": entry.get("psi"),
        "ks": entry.get("ks"),
        "judged": judged,
        "drifted": bool(judged and (entry.get("psi") or 0.0) >= m.prediction_psi_threshold),
    }
    ref = reference.columns[column]
    if ref.numeric:
        out["mean"] = {"reference": ref.mean, "current": _num(stats.mean)}
    else:  # the answered classes' shares (by class index), reference vs window
        mine = current.columns[column].frequencies or {}
        out["shares"] = {
            "reference": {k: _num(v) for k, v in sorted((ref.frequencies or {}).items())},
            "current": {k: _num(v) for k, v in sorted(mine.items())},
        }
        out["chi2_pvalue"] = entry.get("chi2_pvalue")
    return out


def _accuracy(m: Any, partial: VersionPartial, info: VersionInfo) -> dict[str, Any]:
    """The live metrics of the rows that got feedback, against the test split's, per the version's task."""
    task = _task(info)
    labelled = partial.labelled
    n = labelled.num_rows if labelled is not None else 0
    out: dict[str, Any] = {"rows": n, "live": {}, "test": dict(info.test_metrics), "drop": {}}
    out["primary"] = task.primary_metric
    if labelled is None or n == 0:
        out.update(judged=False, note="no feedback joined to this version's rows")
        return out
    targets, unknown = feedback_targets(task, outcome_values(labelled))
    known = ~np.isnan(targets)
    pred = log_pred(labelled, task)
    if len(pred) != n or (pred.ndim == 1 and np.isnan(pred[known]).any()):
        out.update(judged=False, note=f"the logged rows hold no {task.prediction_kind()} predictions")
        return out
    out["rows"] = int(known.sum())
    if unknown:  # a client's outcome the task does not know: counted and shown, never fatal
        out["unknown_outcomes"] = len(unknown)
        out["unknown_examples"] = [str(v) for v in dict.fromkeys(map(str, unknown))][:5]
    if not known.any():
        out.update(judged=False, note=f"no outcome is a {task.name} outcome: {out['unknown_examples']}")
        return out
    metrics = task.metrics(targets[known], pred[known], "live")
    out["live"] = {
        name.split("/", 1)[1]: _num(value) for name, value in metrics.items() if name != "live/rows"
    }
    for name, test in info.test_metrics.items():
        live = out["live"].get(name)
        if live is not None and name in task.directions:  # positive: worse live than on the test split
            out["drop"][name] = _num(test - live if task.higher_is_better(name) else live - test)
    out["judged"] = out["rows"] >= m.min_feedback_rows
    return out


def _drops(m: Any, version: str, task: Any, accuracy: dict[str, Any]) -> list[dict[str, str]]:
    """The alerts of live metrics worse than the test split's: accuracy and AUC by their absolute limits
    (monitor.max_accuracy_drop, max_auc_drop); the task's primary metric, when it has no such limit, by
    monitor.max_metric_drop, a fraction of its test value (RMSE 10% higher, macro-F1 10% lower)."""
    limits = {"accuracy": m.max_accuracy_drop, "auc": m.max_auc_drop}
    relative = getattr(m, "max_metric_drop", None)
    alerts = []
    for name, drop in accuracy["drop"].items():
        kind, limit = f"{name}_drop", limits.get(name)
        if limit is None and name == task.primary_metric and relative is not None:
            kind, limit = "metric_drop", float(relative) * abs(accuracy["test"][name])
        if limit is None or drop is None or drop <= limit:
            continue
        worse = "lower" if task.higher_is_better(name) else "higher"
        alerts.append(
            {
                "version": version,
                "kind": kind,
                "detail": f"{name} test {accuracy['test'][name]:.4f} -> live {accuracy['live'][name]:.4f} "
                f"({worse} by {drop:.4f} > {limit:.4g}; {accuracy['rows']:,} labelled rows)",
            }
        )
    return alerts


def _latency(m: Any, partial: VersionPartial) -> dict[str, Any]:
    from raymlops.data.sketch import QuantileSketch

    out: dict[str, Any] = {"slo": {"p50_ms": m.slo.latency_p50_ms, "p99_ms": m.slo.latency_p99_ms}}
    for route, stats in sorted(partial.latency.items()):
        if stats.sketch is None or stats.non_null == 0:
            continue
        p50, p99 = QuantileSketch.from_dict(stats.sketch).quantiles([0.5, 0.99])
        out.setdefault("routes", {})[route] = {"p50_ms": _num(p50), "p99_ms": _num(p99)}
    served = out.get("routes", {}).get("served")
    out["p50_ms"] = served["p50_ms"] if served else None
    out["p99_ms"] = served["p99_ms"] if served else None
    return out


def version_entry(
    m: Any, model: str, version: str, partial: VersionPartial, info: VersionInfo, window: str
) -> tuple[dict[str, Any], list[dict[str, str]], list[str]]:
    rows = sum(partial.rows.values())
    alerts: list[dict[str, str]] = []
    warnings: list[str] = []
    judged = rows >= m.min_rows
    drift: dict[str, Any] = {"judged": judged}
    if info.profile is not None and rows:
        logged = [c[len(FEATURE_PREFIX) :] for c in partial.columns if c.startswith(FEATURE_PREFIX)]
        inputs = info.input_columns if info.input_columns is not None else logged
        columns = [c for c in inputs if c in info.profile.columns and c in logged]
        unprofiled = sorted(set(inputs) - set(info.profile.columns))
        report = feature_drift(
            info.profile,
            partial,
            columns,
            psi_threshold=m.psi_threshold,
            ks_threshold=m.ks_threshold,
            chi2_pvalue=m.chi2_pvalue,
            label=window,
        )
        drift.update(report, unprofiled=unprofiled)
        if not judged:
            drift["drifted_features"] = []
            drift["note"] = f"{rows} rows < min_rows {m.min_rows}: shown, not judged"
        elif report["drifted_features"]:
            shown = ", ".join(_drift_detail(c, report["features"][c]) for c in report["drifted_features"])
            alerts.append({"version": version, "kind": "feature_drift", "detail": shown})
    else:
        drift.update(features={}, drifted_features=[])
    prediction = _prediction_drift(m, model, version, partial, info, window)
    if prediction["drifted"]:
        alerts.append(
            {
                "version": version,
                "kind": "prediction_drift",
                "detail": f"psi {prediction['psi']} >= {m.prediction_psi_threshold} "
                f"vs the {prediction['reference'].replace('_', ' ')}",
            }
        )
    accuracy = _accuracy(m, partial, info)
    dropped = _drops(m, version, _task(info), accuracy) if accuracy.get("judged") else []
    accuracy["dropped"] = bool(dropped)
    alerts += dropped
    latency = _latency(m, partial)
    breaches = []
    for q in ("p50", "p99"):
        value, limit = latency.get(f"{q}_ms"), latency["slo"][f"{q}_ms"]
        if value is not None and value > limit:
            breaches.append(f"{q} {value:.1f} ms > {limit} ms")
    requests = sum(partial.requests.values())  # a shadow-only version serves no one, by design
    if requests < m.slo.min_requests:
        breaches.append(f"{requests} requests in the window < {m.slo.min_requests}")
    latency["ok"] = not breaches
    warnings += [f"v{version} SLO: {b}" for b in breaches]
    entry = {
        "rows": dict(sorted(partial.rows.items())),
        "requests": dict(sorted(partial.requests.items())),
        "first_ts": timestamp(partial.first_ts_us),
        "last_ts": timestamp(partial.last_ts_us),
        "registered": info.registered is not None,
        "training_data_version": info.profile.data_version if info.profile is not None else None,
        "feature_drift": drift,
        "prediction_drift": prediction,
        "accuracy": accuracy,
        "latency": latency,
        "alerts": [a["kind"] for a in alerts],
    }
    return entry, alerts, warnings


def _drift_detail(name: str, entry: dict[str, Any]) -> str:
    numbers = [f"{key} {entry[key]:.3f}" for key in ("psi", "ks") if entry.get(key) is not None]
    return f"{name} ({', '.join(numbers) or entry.get('note', 'drifted')})"
