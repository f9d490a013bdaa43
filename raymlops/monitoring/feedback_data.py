"""Feedback as training data: served rows joined to their outcomes, published as a versioned table.

The router logs every served row (``f_<column>``: the raw inputs as the model saw them, PII columns
already hashed or left out by the log's own :class:`~raymlops.security.pii.PIIMasker`) and every outcome a
client sends (``POST /v1/feedback``). :func:`labelled_rows` joins the two
(:func:`~raymlops.monitoring.prediction_log.join_feedback`: by ``prediction_id`` and ``row``) and turns
each outcome into a value of the training table's label column by asking the version's task
(``Task.outcome_targets``, then ``Task.label_values``). :func:`publish_feedback` write-audit-publishes the
rows that arrived since its last publish into ``retrain.feedback_ref`` (a Delta table embedded, a lakeFS
path at scale: any data backend), one new version per publish. A row of that table::

    <input columns>   as served: the same names, the log's types (float64 / string), PII as the log holds it
    <label column>    features.label.column, from the outcome (a thresholded label: a stand-in number on
                      the right side of the threshold, see BinaryTask.label_values)
    <time column>     features.split.time_column (else "event_time"): when the prediction was served
    model_version     the version that answered
    prediction_id     the request's id (``prediction-id`` header)
    row               the row within that request
    feedback_ts       when the outcome arrived

Each publish records ``feedback_until`` (the latest ``feedback_ts`` it holds) in its commit's metadata,
so the next publish appends only later outcomes; a correction sent later is a new row (the table is
append-only). A retrain reads it with :func:`feedback_training_rows` (``retrain.include_feedback``,
``retrain.max_feedback_share``) or alone (``retrain.feedback_only``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.errors import ConfigError

__all__ = [
    "FEEDBACK_META_COLUMNS",
    "FeedbackPublish",
    "cap_feedback_rows",
    "feedback_rules",
    "feedback_time_column",
    "labelled_rows",
    "max_feedback_rows",
    "publish_feedback",
    "training_columns",
]

logger = logging.getLogger(__name__)

FEEDBACK_META_COLUMNS = ("model_version", "prediction_id", "row", "feedback_ts")
WATERMARK_KEY = "feedback_until"  # commit metadata: the latest feedback_ts a publish holds
_KEY = "retrain.feedback_ref"


@dataclass(frozen=True)
class FeedbackPublish:
    """One publish: the table's new version (None: nothing new arrived), its rows and what was left out."""

    ref: str
    version: Any  # DataVersion | None
    rows: int
    unknown_outcomes: int  # outcomes the version's task does not know: left out
    watermark: str | None  # the latest feedback_ts now published (ISO), None when never published

    def line(self) -> str:
        if self.version is None:
            return f"feedback: nothing new to publish into {self.ref} (published up to {self.watermark})"
        left = f"; {self.unknown_outcomes} unknown outcome(s) left out" if self.unknown_outcomes else ""
        return f"feedback: {self.rows} labelled rows published as {self.version}{left}"


def feedback_time_column(cfg: Any) -> str:
    """The column that holds a feedback row's event time: the split's time column, else ``event_time``."""
    return str(cfg.features.split.time_column or "event_time")


def training_columns(cfg: Any) -> list[str]:
    """What the features stage reads of a row: the features, the label, the split's time or group column.

    A union of data.ref and feedback rows keeps these (both tables have them); views are joined later."""
    split = cfg.features.split
    columns = [*map(str, cfg.features.numeric), *map(str, cfg.features.categorical)]
    columns.append(str(cfg.features.label.column))
    if str(split.kind) == "time" and split.time_column:
        columns.append(str(split.time_column))
    if str(split.kind) == "group" and split.group_column:
        columns.append(str(split.group_column))
    if cfg.features.views:
        columns.append(str(cfg.features.event_time))
    return list(dict.fromkeys(columns))


def _pii_columns(cfg: Any) -> set[str]:
    return {str(name) for name, tags in (cfg.data.columns or {}).items() if tags.pii}


def feedback_rules(cfg: Any, columns: list[str]) -> dict[str, Any]:
    """The ``validate`` rules as a dict, narrowed to ``columns``: a feedback table (or a union with it)
    holds the model's inputs, the label and the time only. PII columns are not judged (their values are
    hashes), nor is drift against a reference of the full table."""
    from omegaconf import OmegaConf

    rules: Any = OmegaConf.to_container(cfg.validate, resolve=True, enum_to_str=True)
    present, pii = set(columns), _pii_columns(cfg)
    judged = present - pii
    rules["columns"] = {name: rule for name, rule in (rules.get("columns") or {}).items() if name in judged}
    unique = rules.get("unique") or {}
    if unique.get("key") and not set(unique["key"]) <= present:
        rules["unique"] = {**unique, "key": []}
    freshness = rules.get("freshness") or {}
    if freshness.get("column") and freshness["column"] not in present:
        rules["freshness"] = {**freshness, "column": None}
    rules["drift"] = {**(rules.get("drift") or {}), "reference": None}
    return rules


def _versions(registry: Any, model: str, versions: list[str]) -> dict[str, tuple[Any, list[str] | None]]:
    """version -> (its task, its raw input columns; None where the registry does not say)."""
    from raymlops.registry.tags import INPUT_COLUMNS_TAG, TASK_TAG
    from raymlops.tasks.codec import task_from_json

    out: dict[str, tuple[Any, list[str] | None]] = {}
    for version in versions:
        tags = registry.version(model, version).tags
        inputs = tags.get(INPUT_COLUMNS_TAG)
        columns = [part.split(":", 1)[0] for part in inputs.split(",") if part] if inputs else None
        out[version] = (task_from_json(tags.get(TASK_TAG)), columns)
    return out


def labelled_rows(
    cfg: Any,
    *,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    after: dt.datetime | None = None,
    registry: Any = None,
) -> tuple[pa.Table, int]:
    """(served rows of ``registry.model_name`` in ``[since, until)`` with an outcome that arrived after
    ``after``, as feedback-table rows (see the module docstring); how many outcomes no task knew)."""
    from raymlops.monitoring.feedback import feedback_targets, outcome_values
    from raymlops.monitoring.prediction_log import (
        FEATURE_PREFIX,
        join_feedback,
        read_feedback,
        read_predictions,
    )
    from raymlops.registry.mlflow_registry import ModelRegistry

    model, root = str(cfg.registry.model_name), str(cfg.monitor.log_root)
    feedback = read_feedback(root, model, since=since)
    if after is not None:
        feedback = feedback.filter(pc.greater(feedback["ts"], pa.scalar(after, feedback["ts"].type)))
    predictions = read_predictions(root, model, since, until)
    served = predictions.filter(pc.equal(predictions["route"], "served"))
    joined = join_feedback(served, feedback) if feedback.num_rows and served.num_rows else None
    if joined is None or joined.num_rows == 0:
        return pa.table({}), 0
    registry = registry or ModelRegistry.from_config(cfg.registry)
    label, time = str(cfg.features.label.column), feedback_time_column(cfg)
    parts, unknown = [], 0
    versions = sorted(set(joined["version"].to_pylist()))
    for version, (task, inputs) in _versions(registry, model, versions).items():
        rows = joined.filter(pc.equal(joined["version"], version))
        targets, missed = feedback_targets(task, outcome_values(rows))
        unknown += len(missed)
        known = np.isfinite(targets)
        rows = rows.filter(pa.array(known))
        # The version's own inputs (the log reads other versions' f_ columns as nulls in its rows).
        features = [n for n in rows.column_names if n.startswith(FEATURE_PREFIX)]
        if inputs is not None:
            features = [n for n in features if n[len(FEATURE_PREFIX) :] in inputs]
        table = pa.table(
            {n[len(FEATURE_PREFIX) :]: rows[n] for n in features}
            | {
                label: task.label_values(targets[known]),
                time: rows["ts"],
                "model_version": rows["version"],
                "prediction_id": rows["prediction_id"],
                "row": rows["row"],
                "feedback_ts": rows["feedback_ts"],
            }
        )
        parts.append(table)
    out = pa.concat_tables(parts, promote_options="permissive")
    order = [("feedback_ts", "ascending"), ("prediction_id", "ascending"), ("row", "ascending")]
    return out.sort_by(order), unknown


def _watermark(backend: Any) -> dt.datetime | None:
    """The latest ``feedback_until`` a publish recorded in the table's log; None before the first."""
    from raymlops.data.versioning import SeedableBackend

    if isinstance(backend, SeedableBackend) and not backend.exists():
        return None
    try:
        entries = backend.log(50)
    except ConfigError:  # no table yet (a backend without exists())
        return None
    for entry in entries:
        value = entry.metadata.get(WATERMARK_KEY)
        if value:
            return dt.datetime.fromisoformat(value)
    return None


def publish_feedback(
    cfg: Any,
    *,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    registry: Any = None,
    out_dir: str | Path | None = None,
) -> FeedbackPublish:
    """Write-audit-publish the labelled rows whose outcome arrived since the last publish into
    ``retrain.feedback_ref``; audited by the job's ``validate`` rules narrowed to the table's columns
    (:func:`feedback_rules`). Nothing new: no new version.

    Raises:
        DataValidationError: the rows fail the rules (nothing is published).
    """
    from raymlops.data.audit import audit_dataset
    from raymlops.data.publish import write_audit_publish
    from raymlops.data.refs import open_backend

    ref = str(cfg.retrain.feedback_ref)
    backend = open_backend(ref, cfg.data.lakefs, key=_KEY)
    watermark = _watermark(backend)
    rows, unknown = labelled_rows(cfg, since=since, until=until, after=watermark, registry=registry)
    shown = watermark.isoformat() if watermark is not None else None
    if rows.num_rows == 0:
        return FeedbackPublish(ref, None, 0, unknown, shown)
    latest = pc.max(rows["feedback_ts"]).as_py().isoformat()
    folder = Path(out_dir or Path(str(cfg.state_dir)) / "feedback_audit") / dt.datetime.now(dt.UTC).strftime(
        "%Y%m%dT%H%M%S%f"
    )
    # A publish adds the outcomes of hours, not a table: validate.min_rows is the training union's to meet.
    rules = feedback_rules(cfg, rows.column_names) | {"min_rows": 1}
    result = write_audit_publish(
        backend,
        rows,
        lambda ds, version: audit_dataset(ds, rules, version, folder),
        f"feedback of {cfg.registry.model_name}: {rows.num_rows} labelled rows up to {latest}",
        {WATERMARK_KEY: latest, "model": str(cfg.registry.model_name), "rows": str(rows.num_rows)},
    )
    logger.info("feedback published version=%s rows=%d", result.published, rows.num_rows)
    return FeedbackPublish(ref, result.published, rows.num_rows, unknown, latest)


def max_feedback_rows(base_rows: int, share: float) -> int | None:
    """The most feedback rows beside ``base_rows`` so that they are at most ``share`` of the union
    (``f <= share * (base + f)``); None: no cap (``share`` 1)."""
    if not 0.0 < share <= 1.0:
        raise ConfigError("retrain.max_feedback_share", f"{share} is not in (0, 1].")
    if share >= 1.0:
        return None
    return int(np.floor(share * base_rows / (1.0 - share) + 1e-9))


def cap_feedback_rows(table: pa.Table, cap: int | None, seed: int) -> pa.Table:
    """At most ``cap`` rows of ``table``: those with the smallest seeded hash of their request id and row
    (the same rows for the same table version and seed, whatever the order), kept in table order."""
    if cap is None or table.num_rows <= cap:
        return table
    from raymlops.data.sampling import row_hashes

    hashes = row_hashes(table, seed, ["prediction_id", "row"])
    keep = np.sort(np.argsort(hashes, kind="stable")[:cap])
    return table.take(pa.array(keep))
