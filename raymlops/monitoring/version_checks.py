"""The checks of one version's rows in a window: feature and prediction drift, live accuracy, latency.

:func:`version_entry` gives the version's part of the report, with its alerts (drift, an accuracy or
AUC drop) and warnings (a latency or traffic SLO breach).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from raymlops.data.profile import Profile
from raymlops.monitoring.prediction_log import FEATURE_PREFIX
from raymlops.monitoring.version_info import PREDICTION_PROFILE, VersionInfo
from raymlops.monitoring.window import timestamp
from raymlops.monitoring.window_stats import PROBABILITY, VersionPartial, feature_drift

__all__ = ["ALERT_KINDS", "safe_name", "version_entry"]

ALERT_KINDS = ("feature_drift", "prediction_drift", "accuracy_drop", "auc_drop")
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


def _prediction_drift(
    m: Any, model: str, version: str, partial: VersionPartial, info: VersionInfo, window: str
) -> dict[str, Any]:
    from raymlops.data.drift import drift_report

    rows = sum(partial.rows.values())
    stats = partial.columns.get(PROBABILITY)
    if stats is None or stats.non_null == 0:
        return {"reference": None, "psi": None, "drifted": False, "note": "no predictions in the window"}
    current = Profile.from_stats({PROBABILITY: stats}, rows, window, [PROBABILITY])
    stored = _reference_path(m.out_dir, model, version)
    established = False
    if info.prediction_reference is not None:
        reference, kind = info.prediction_reference, "test_split"
        where = info.prediction_reference_path or PREDICTION_PROFILE
    elif stored.exists():
        reference, kind, where = Profile.load(stored), "first_window", str(stored)
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
    entry = report["features"][PROBABILITY]
    judged = rows >= m.min_rows
    return {
        "reference": kind,
        "reference_path": where,
        "reference_data_version": reference.data_version,
        "established_now": established,
        "psi": entry.get("psi"),
        "ks": entry.get("ks"),
        "mean": {"reference": reference.columns[PROBABILITY].mean, "current": _num(stats.mean)},
        "judged": judged,
        "drifted": bool(judged and (entry.get("psi") or 0.0) >= m.prediction_psi_threshold),
    }


def _accuracy(m: Any, partial: VersionPartial, info: VersionInfo) -> dict[str, Any]:
    from raymlops.evaluation.metrics import binary_metrics

    n = len(partial.outcome)
    out: dict[str, Any] = {"rows": n, "live": {}, "test": dict(info.test_metrics), "drop": {}}
    if n == 0:
        out.update(judged=False, note="no feedback joined to this version's rows")
        return out
    if not np.isin(partial.outcome, (0.0, 1.0)).all():
        out.update(judged=False, note="outcomes are not 0/1 labels: no classification metrics")
        return out
    metrics = binary_metrics(partial.outcome, partial.probability, "live")
    out["live"] = {
        "accuracy": _num(metrics["live/accuracy"]),
        "auc": _num(metrics["live/auc"]),
        "logloss": _num(metrics["live/logloss"]),
        "positive_rate": _num(metrics["live/positive_rate"]),
    }
    for name in ("accuracy", "auc"):
        live, test = out["live"].get(name), info.test_metrics.get(name)
        if live is not None and test is not None:
            out["drop"][name] = _num(test - live)
    out["judged"] = n >= m.min_feedback_rows
    return out


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
    accuracy["dropped"] = False
    if accuracy.get("judged"):
        for name, limit in (("accuracy", m.max_accuracy_drop), ("auc", m.max_auc_drop)):
            drop = accuracy["drop"].get(name)
            if drop is not None and drop > limit:
                accuracy["dropped"] = True
                alerts.append(
                    {
                        "version": version,
                        "kind": f"{name}_drop",
                        "detail": f"test {accuracy['test'][name]:.4f} -> live {accuracy['live'][name]:.4f} "
                        f"(drop {drop:.4f} > {limit}; {accuracy['rows']:,} labelled rows)",
                    }
                )
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
