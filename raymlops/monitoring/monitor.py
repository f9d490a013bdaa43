"""The monitor: drift, live accuracy and latency of one model's logged traffic, per model version.

:func:`run_monitor` reads a window ``[since, until)`` of the prediction log and, for every version
found there (or the one an alias or version number names), computes

- **feature drift** of each raw input column (the log's ``f_<column>`` columns) against the training
  data profile registered with the version (``profile.json``): the window's rows become a
  :class:`~raymlops.data.profile.Profile` through the same statistics pass the validate stage uses
  (:func:`~raymlops.data.stats.table_stats`: moments, value counts, quantile sketches) and are
  compared by :func:`~raymlops.data.drift.drift_report` (PSI + KS for numeric columns, PSI +
  chi-square for categorical ones);
- **prediction drift**: the served probabilities against a reference distribution: the version's
  test-split probabilities when its model folder holds :data:`PREDICTION_PROFILE`, else the first
  window with at least ``monitor.min_rows`` rows this monitor saw for the version (stored under
  ``<out_dir>/references/``); the report says which;
- **live accuracy** from feedback joined by prediction id (accuracy, AUC when both classes occur,
  log loss, count; the same :func:`~raymlops.evaluation.metrics.binary_metrics` the evaluate stage
  uses) against ``test/accuracy`` and ``test/auc`` logged in the version's MLflow run;
- **latency** p50/p99 per request and row/request counts per route, against ``monitor.slo``.

Drift or an accuracy drop over the configured thresholds is an *alert* (``report.ok`` is False;
``jobs/monitor.py`` exits 1); a latency or traffic SLO breach is a *warning*. Request errors are not
in the log: the error-rate alert works from the serving counters (``monitoring/prometheus/alerts.yml``).

A window whose files take more than ``monitor.ray_data_min_bytes`` on disk is read by Ray Data, one
task per file (:func:`~raymlops.data.arrow_read.read_arrow_dataset`); each task computes the partial
statistics of its rows (:func:`window_partials`) and the driver merges them. A smaller window is read
with :func:`~raymlops.monitoring.prediction_log.read_predictions` and goes through the same function.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import pickle
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.data.profile import Profile
from raymlops.data.stats import ColumnStats, TableStats, _tree_merge, table_stats
from raymlops.errors import ConfigError, ModelNotFoundError
from raymlops.monitoring.prediction_log import FEATURE_PREFIX, join_feedback

__all__ = [
    "ALERT_KINDS",
    "PREDICTION_PROFILE",
    "PROFILE",
    "MonitorReport",
    "VersionPartial",
    "feature_drift",
    "merge_partials",
    "prediction_profile",
    "run_monitor",
    "window_partials",
    "write_outputs",
]

logger = logging.getLogger(__name__)

PROFILE = "profile.json"  # the training data's profile, a model file of every version (register stage)
# The test split's served-probability distribution as a Profile with one column, "probability"; a model
# file when the register stage records it (see prediction_profile), else the first window is the reference.
PREDICTION_PROFILE = "prediction_profile.json"
PROBABILITY = "probability"
ALERT_KINDS = ("feature_drift", "prediction_drift", "accuracy_drop", "auc_drop")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def prediction_profile(probabilities: Any, data_version: str) -> Profile:
    """The profile of a set of predicted probabilities (e.g. a version's test split): the reference
    :func:`run_monitor` compares served probabilities with when saved as :data:`PREDICTION_PROFILE`."""
    table = pa.table({PROBABILITY: pa.array(np.asarray(probabilities, dtype=np.float64))})
    return Profile.from_stats(table_stats(table), table.num_rows, data_version, [PROBABILITY])


# -- the one statistics pass --------------------------------------------------------------------------


@dataclass
class VersionPartial:
    """Mergeable statistics of one version's rows in (part of) a window."""

    rows: dict[str, int] = field(default_factory=dict)  # route -> rows
    requests: dict[str, int] = field(default_factory=dict)  # route -> requests (row 0 of each)
    columns: TableStats = field(default_factory=dict)  # f_<column> and "probability", all rows
    latency: dict[str, ColumnStats] = field(default_factory=dict)  # route -> latency_ms, one per request
    probability: np.ndarray = field(default_factory=lambda: np.empty(0))  # rows with feedback ...
    outcome: np.ndarray = field(default_factory=lambda: np.empty(0))  # ... and their true outcome
    first_ts_us: int | None = None
    last_ts_us: int | None = None


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    counted = pc.value_counts(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True))


def window_partials(table: pa.Table, feedback: pa.Table | None = None) -> dict[str, VersionPartial]:
    """The statistics of some prediction-log rows, per version: what every monitor run computes.

    ``feedback`` (rows of ``FEEDBACK_SCHEMA``) is joined by prediction id and row; the matched rows'
    probabilities and outcomes are kept for the live metrics.
    """
    if table.num_rows == 0:
        return {}
    features = [c for c in table.column_names if c.startswith(FEATURE_PREFIX)]
    joined = None
    if feedback is not None and feedback.num_rows:
        keys = ["prediction_id", "row", "version", PROBABILITY]
        joined = join_feedback(table.select(keys), feedback, join_type="inner")
    out: dict[str, VersionPartial] = {}
    for version in pc.unique(table["version"]).to_pylist():
        rows = table.filter(pc.equal(table["version"], version))
        part = VersionPartial(columns=table_stats(rows, [*features, PROBABILITY]))
        ts = pc.min_max(rows["ts"].cast(pa.int64())).as_py()
        part.first_ts_us, part.last_ts_us = ts["min"], ts["max"]
        part.rows = _counts(rows["route"])
        first = rows.filter(pc.equal(rows["row"], 0))
        part.requests = _counts(first["route"]) if first.num_rows else {}
        for route in part.requests:
            per_request = first.filter(pc.equal(first["route"], route))
            part.latency[route] = table_stats(per_request, ["latency_ms"])["latency_ms"]
        if joined is not None and joined.num_rows:
            mine = joined.filter(pc.equal(joined["version"], version))
            part.probability = mine[PROBABILITY].to_numpy().astype(np.float64)
            part.outcome = mine["outcome"].to_numpy().astype(np.float64)
        out[version] = part
    return out


def _sum(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def merge_partials(parts: Iterable[Mapping[str, VersionPartial]]) -> dict[str, VersionPartial]:
    """Merge per-block partials; sketches merge pairwise (a balanced tree, see ``data/sketch.py``)."""
    by_version: dict[str, list[VersionPartial]] = {}
    for part in parts:
        for version, partial in part.items():
            by_version.setdefault(version, []).append(partial)
    merged: dict[str, VersionPartial] = {}
    for version, partials in by_version.items():
        if len(partials) == 1:
            merged[version] = partials[0]
            continue
        out = VersionPartial()
        columns: dict[str, list[ColumnStats]] = {}
        latency: dict[str, list[ColumnStats]] = {}
        for p in partials:
            out.rows, out.requests = _sum(out.rows, p.rows), _sum(out.requests, p.requests)
            for name, stats in p.columns.items():
                columns.setdefault(name, []).append(stats)
            for route, stats in p.latency.items():
                latency.setdefault(route, []).append(stats)
        out.columns = {name: _tree_merge(s) for name, s in columns.items()}
        out.latency = {route: _tree_merge(s) for route, s in latency.items()}
        out.probability = np.concatenate([p.probability for p in partials])
        out.outcome = np.concatenate([p.outcome for p in partials])
        firsts = [p.first_ts_us for p in partials if p.first_ts_us is not None]
        lasts = [p.last_ts_us for p in partials if p.last_ts_us is not None]
        out.first_ts_us, out.last_ts_us = min(firsts, default=None), max(lasts, default=None)
        merged[version] = out
    return merged


def feature_drift(
    reference: Profile,
    partial: VersionPartial,
    columns: Iterable[str],
    *,
    psi_threshold: float = 0.2,
    ks_threshold: float = 0.1,
    chi2_pvalue: float = 0.01,
    label: str = "window",
) -> dict[str, Any]:
    """:func:`~raymlops.data.drift.drift_report` of the window's ``f_<column>`` statistics against a
    version's training profile, for ``columns`` (raw column names, all in ``reference``)."""
    from raymlops.data.drift import drift_report

    names = list(columns)
    stats = {c: partial.columns[FEATURE_PREFIX + c] for c in names if FEATURE_PREFIX + c in partial.columns}
    rows = sum(partial.rows.values())
    current = Profile.from_stats(stats, rows, label, [c for c in names if c in stats])
    return drift_report(
        reference,
        current,
        psi_threshold=psi_threshold,
        ks_threshold=ks_threshold,
        chi2_pvalue=chi2_pvalue,
        columns=names,
    )


# -- reading the window --------------------------------------------------------------------------------


def _log_dataset(root: str, model: str, since: Any, until: Any) -> tuple[Any, Any, int]:
    """(unified pyarrow dataset of the window's files or None, row filter, bytes on disk)."""
    import pyarrow.dataset as ds
    from pyarrow import fs

    from raymlops.monitoring.parquet_log import discover, resolve_root
    from raymlops.monitoring.prediction_log import PREDICTIONS_DIR, _window

    filesystem, base = resolve_root(f"{root.rstrip('/')}/{PREDICTIONS_DIR}")
    partition, row = _window(since, until)
    if filesystem.get_file_info(base).type != fs.FileType.Directory:
        return None, row, 0
    partitioning = ds.partitioning(pa.schema([("model", pa.string()), ("date", pa.string())]), flavor="hive")
    dataset, encrypted = discover(filesystem, base, partitioning)
    if encrypted or dataset is None:
        # Encrypted parts are decrypted in this process (read_predictions -> read_log): Ray Data's
        # readers would need the KEK in every read task.
        return None, row, 0
    wanted = ds.field("model") == model
    fragments = list(dataset.get_fragments(filter=wanted if partition is None else wanted & partition))
    if not fragments:
        return None, row, 0
    size = sum(info.size or 0 for info in filesystem.get_file_info([f.path for f in fragments]))
    schema = pa.unify_schemas(
        [f.physical_schema for f in fragments] + [partitioning.schema], promote_options="permissive"
    )
    return ds.FileSystemDataset(fragments, schema, dataset.format, filesystem), row, size


def _block_partials(block: pa.Table, row_filter: Any, feedback: pa.Table | None) -> pa.Table:
    rows = block.filter(row_filter) if row_filter is not None else block
    return pa.table({"partials": [pickle.dumps(window_partials(rows, feedback))]})


def _partials_with_ray(cfg: Any, dataset: Any, row_filter: Any, feedback: pa.Table) -> list[dict]:
    import ray

    from raymlops.data.arrow_read import read_arrow_dataset
    from raymlops.pipeline.ray_session import connect_ray

    if not ray.is_initialized():
        connect_ray(cfg.ray)
    blocks = read_arrow_dataset(dataset).map_batches(
        _block_partials,
        fn_kwargs={"row_filter": row_filter, "feedback": feedback if feedback.num_rows else None},
        batch_format="pyarrow",
        batch_size=None,
        zero_copy_batch=True,
    )
    return [pickle.loads(row["partials"]) for row in blocks.take_all()]


# -- the registry side ------------------------------------------------------------------------------


@dataclass
class _VersionInfo:
    registered: Any = None  # RegisteredVersion
    profile: Profile | None = None
    prediction_reference: Profile | None = None
    prediction_reference_path: str | None = None
    test_metrics: dict[str, float] = field(default_factory=dict)
    input_columns: list[str] | None = None
    problems: list[str] = field(default_factory=list)


def _artifact(registry: Any, version: Any, filename: str) -> Path | None:
    try:
        path = registry.local_artifact(version, filename)
    except Exception:  # a remote store without the file: download_artifacts raises
        return None
    return path if path.exists() else None


def _version_info(registry: Any, model: str, version: str, split: str) -> _VersionInfo:
    info = _VersionInfo()
    try:
        registered = registry.version(model, version)
    except ModelNotFoundError:
        info.problems.append(f"v{version} is not in the registry: no profile, no test metrics")
        return info
    info.registered = registered
    tag = registered.tags.get("raymlops.input_columns")
    if tag:
        info.input_columns = [part.split(":", 1)[0] for part in tag.split(",") if part]
    profile_path = _artifact(registry, registered, PROFILE)
    if profile_path is None:
        info.problems.append(f"v{version} has no {PROFILE}: feature drift not computed")
    else:
        info.profile = Profile.load(profile_path)
    predictions_path = _artifact(registry, registered, PREDICTION_PROFILE)
    if predictions_path is not None:
        reference = Profile.load(predictions_path)
        if PROBABILITY in reference.columns:
            info.prediction_reference = reference
            info.prediction_reference_path = str(predictions_path)
        else:
            info.problems.append(f"v{version}: {PREDICTION_PROFILE} has no {PROBABILITY!r} column: ignored")
    try:
        metrics = registry.client.get_run(registered.run_id).data.metrics
    except Exception as exc:  # a deleted run: the version is still monitored
        info.problems.append(f"v{version}: its run {registered.run_id} cannot be read ({exc})")
        metrics = {}
    for name in ("accuracy", "auc"):
        value = metrics.get(f"test/{name}", metrics.get(f"{split}/{name}"))
        if value is not None:
            info.test_metrics[name] = float(value)
    return info


# -- the report -------------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _instant(value: dt.datetime | str | None, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(what, f"is not an ISO 8601 date-time: {value!r}.") from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


@dataclass(frozen=True)
class MonitorReport:
    """What one monitor run found. ``to_dict()`` is the JSON report, ``summary()`` the text one."""

    model: str
    selector: str | None  # the alias or version asked for; None: every version in the window
    since: str
    until: str
    generated_at: float  # unix seconds
    log_root: str
    read_with: str  # "pyarrow" | "ray_data"
    rows: int
    versions: dict[str, dict[str, Any]]
    alerts: tuple[dict[str, str], ...]
    warnings: tuple[str, ...]
    thresholds: dict[str, Any]

    @property
    def ok(self) -> bool:
        return not self.alerts

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "selector": self.selector,
            "window": {"since": self.since, "until": self.until},
            "generated_at": self.generated_at,
            "log_root": self.log_root,
            "read_with": self.read_with,
            "rows": self.rows,
            "ok": self.ok,
            "alerts": list(self.alerts),
            "warnings": list(self.warnings),
            "thresholds": self.thresholds,
            "versions": _finite_json(self.versions),
        }

    def summary(self) -> str:
        lines = [
            f"monitor {self.model}{'@' + self.selector if self.selector else ''} "
            f"[{self.since}, {self.until}): {self.rows:,} rows, {len(self.versions)} version(s), "
            f"read with {self.read_with}: {'OK' if self.ok else f'{len(self.alerts)} ALERT(S)'}"
        ]
        for version, entry in self.versions.items():
            aliases = f" ({', '.join(entry['aliases'])})" if entry.get("aliases") else ""
            routes = ", ".join(f"{r} {n:,}" for r, n in sorted(entry["rows"].items())) or "no rows"
            parts = [f"v{version}{aliases}: {routes}"]
            drift = entry["feature_drift"]
            if drift.get("features"):
                drifted = drift["drifted_features"]
                shown = ", ".join(f"{c} psi {drift['features'][c]['psi']:.3f}" for c in drifted[:4])
                parts.append(
                    f"drift {len(drifted)}/{len(drift['features'])} features{': ' if shown else ''}{shown}"
                )
            prediction = entry["prediction_drift"]
            if prediction.get("psi") is not None:
                new = " (set by this window)" if prediction.get("established_now") else ""
                parts.append(f"predictions psi {prediction['psi']:.3f} vs {prediction['reference']}{new}")
            accuracy = entry["accuracy"]
            live, test = accuracy["live"].get("accuracy"), accuracy["test"].get("accuracy")
            if live is not None:
                versus = f" vs test {test:.3f}" if test is not None else ""
                parts.append(f"live accuracy {live:.3f}{versus} ({accuracy['rows']:,} labelled)")
            latency = entry["latency"]
            if latency.get("p50_ms") is not None:
                parts.append(f"p50 {latency['p50_ms']:.1f} ms p99 {latency['p99_ms']:.1f} ms")
            lines.append("  " + " | ".join(parts))
        lines += [f"ALERT v{a['version']} {a['kind']}: {a['detail']}" for a in self.alerts]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by None: the report stays strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    return value


def _parse_selector(model: str, alias_or_version: str | None) -> tuple[str, str | None]:
    if alias_or_version is None and "@" in model:
        model, _, alias_or_version = model.partition("@")
    if not model:
        raise ConfigError("monitor.model", "names no model: use <name>[@<alias>|@<version>].")
    return model, alias_or_version or None


def _reference_path(out_dir: str, model: str, version: str) -> Path:
    return (
        Path(out_dir)
        / "references"
        / _SAFE.sub("_", model)
        / f"v{_SAFE.sub('_', version)}"
        / PREDICTION_PROFILE
    )


def _prediction_drift(
    m: Any, model: str, version: str, partial: VersionPartial, info: _VersionInfo, window: str
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


def _accuracy(m: Any, partial: VersionPartial, info: _VersionInfo) -> dict[str, Any]:
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
    end = _instant(until, "until") or dt.datetime.now(dt.UTC)
    start = _instant(since, "since") or end - parse_duration(str(m.window), "monitor.window")
    if start >= end:
        raise ConfigError("since", f"{_iso(start)} is not before until {_iso(end)}.")
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
    dataset, row_filter, size = _log_dataset(root, model, start, end)
    if dataset is not None and size > m.ray_data_min_bytes:
        read_with = "ray_data"
        partials = merge_partials(_partials_with_ray(cfg, dataset, row_filter, feedback))
    else:
        read_with = "pyarrow"
        partials = window_partials(read_predictions(root, model, start, end), feedback)
    logger.info(
        "monitor window model=%s since=%s until=%s bytes=%d read_with=%s versions=%s",
        model, _iso(start), _iso(end), size, read_with, sorted(partials),
    )  # fmt: skip

    try:
        registered = {v.version: v for v in registry.versions(model)}
    except ModelNotFoundError:
        registered = {}
    versions = [wanted] if wanted is not None else sorted(partials, key=_version_key)
    split = str(cfg.evaluate.split) if "evaluate" in cfg else "test"
    window = f"{model} log [{_iso(start)}, {_iso(end)})"
    entries: dict[str, dict[str, Any]] = {}
    alerts: list[dict[str, str]] = []
    warnings: list[str] = []
    if not registered:
        warnings.append(f"{model} is not in the registry at {cfg.registry.tracking_uri}")
    if not partials:
        warnings.append(f"no rows of {model} logged under {root} in the window")
    for version in versions:
        partial = partials.get(version, VersionPartial())
        info = _version_info(registry, model, version, split) if registered else _VersionInfo()
        warnings += info.problems
        entry, found, warned = _version_entry(m, model, version, partial, info, window)
        entry["aliases"] = list(registered[version].aliases) if version in registered else []
        entries[version] = entry
        alerts += found
        warnings += warned
    return MonitorReport(
        model=model,
        selector=selector,
        since=_iso(start),
        until=_iso(end),
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


def _version_entry(
    m: Any, model: str, version: str, partial: VersionPartial, info: _VersionInfo, window: str
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
        "first_ts": _ts(partial.first_ts_us),
        "last_ts": _ts(partial.last_ts_us),
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


def _ts(us: int | None) -> str | None:
    return None if us is None else _iso(dt.datetime.fromtimestamp(us / 1e6, tz=dt.UTC))


def write_outputs(report: MonitorReport, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``<out_dir>/<model>/report.json`` (+ a copy under ``history/``), ``summary.txt`` and the
    Prometheus textfile ``<out_dir>/textfile/raymlops_monitor_<model>.prom``; returns the paths."""
    from raymlops.monitoring.exporter import MonitorExporter

    folder = Path(out_dir) / _SAFE.sub("_", report.model)
    (folder / "history").mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.to_dict(), indent=2, default=str, allow_nan=False)
    stamp = dt.datetime.fromtimestamp(report.generated_at, tz=dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    paths = {
        "report": folder / "report.json",
        "history": folder / "history" / f"report-{stamp}.json",
        "summary": folder / "summary.txt",
        "prom": Path(out_dir) / "textfile" / f"raymlops_monitor_{_SAFE.sub('_', report.model)}.prom",
    }
    from raymlops.security.crypto import write_sensitive

    # The report names feature values (drift per category): encrypted when encryption is on. The
    # Prometheus textfile holds only figures and stays readable by the node exporter.
    for key in ("report", "history"):
        tmp = paths[key].with_suffix(".json.tmp")
        write_sensitive(tmp, text)
        tmp.replace(paths[key])
    write_sensitive(paths["summary"], report.summary() + "\n")
    exporter = MonitorExporter()
    exporter.update(report)
    exporter.write_textfile(paths["prom"])
    return paths
