"""The monitor's one statistics pass over prediction-log rows, per version, and its merge.

Every monitor run computes :func:`window_partials` of its window's rows (in one process, or per file in
Ray Data tasks whose results :func:`merge_partials` combines); :func:`feature_drift` compares the merged
input-column statistics with a version's training profile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.data.profile import Profile
from raymlops.data.stats import ColumnStats, TableStats, _tree_merge, table_stats
from raymlops.monitoring.prediction_log import FEATURE_PREFIX, OUTPUT_NAMES, join_feedback

__all__ = [
    "PREDICTED_CLASS",
    "PROBABILITY",
    "VALUE",
    "VersionPartial",
    "feature_drift",
    "merge_partials",
    "window_partials",
]

PROBABILITY = "probability"
VALUE = "value"
# The answered class of a multiclass row as a category (its index as text): drift compares class shares.
PREDICTED_CLASS = "predicted_class"


@dataclass
class VersionPartial:
    """Mergeable statistics of one version's rows in (part of) a window."""

    rows: dict[str, int] = field(default_factory=dict)  # route -> rows
    requests: dict[str, int] = field(default_factory=dict)  # route -> requests (row 0 of each)
    columns: TableStats = field(default_factory=dict)  # f_<column> and "probability", all rows
    latency: dict[str, ColumnStats] = field(default_factory=dict)  # route -> latency_ms, one per request
    # Rows with feedback: their output columns (probability, probabilities, value), outcome, outcome_text.
    labelled: pa.Table | None = None
    first_ts_us: int | None = None
    last_ts_us: int | None = None

    @property
    def probability(self) -> np.ndarray:
        """The labelled rows' probability column (NaN where the task logs none)."""
        if self.labelled is None:
            return np.empty(0)
        return self.labelled[PROBABILITY].to_numpy(zero_copy_only=False).astype(np.float64)

    @property
    def outcome(self) -> np.ndarray:
        """The labelled rows' numeric outcomes (NaN for a text outcome)."""
        if self.labelled is None:
            return np.empty(0)
        return self.labelled["outcome"].to_numpy(zero_copy_only=False).astype(np.float64)


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    counted = pc.value_counts(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
    return dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True))


def window_partials(table: pa.Table, feedback: pa.Table | None = None) -> dict[str, VersionPartial]:
    """The statistics of some prediction-log rows, per version: what every monitor run computes.

    ``feedback`` (rows of ``FEEDBACK_SCHEMA``) is joined by prediction id and row; the matched rows'
    output columns and outcomes are kept for the live metrics. The statistics cover the input columns and
    each task's prediction statistic: ``probability``, ``value``, ``predicted_class`` (multiclass).
    """
    if table.num_rows == 0:
        return {}
    features = [c for c in table.column_names if c.startswith(FEATURE_PREFIX)]
    outputs = [c for c in OUTPUT_NAMES if c in table.column_names]
    if "class_index" in outputs:
        table = table.append_column(PREDICTED_CLASS, pc.cast(table["class_index"], pa.string()))
    statistics = [PROBABILITY, *(c for c in (VALUE, PREDICTED_CLASS) if c in table.column_names)]
    joined = None
    if feedback is not None and feedback.num_rows:
        keys = ["prediction_id", "row", "version", PROBABILITY, *outputs]
        joined = join_feedback(table.select(keys), feedback, join_type="inner")
    out: dict[str, VersionPartial] = {}
    for version in pc.unique(table["version"]).to_pylist():
        rows = table.filter(pc.equal(table["version"], version))
        part = VersionPartial(columns=table_stats(rows, [*features, *statistics]))
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
            if mine.num_rows:
                part.labelled = mine.drop_columns(["prediction_id", "row", "version", "feedback_ts"])
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
        labelled = [p.labelled for p in partials if p.labelled is not None]
        if labelled:
            out.labelled = pa.concat_tables(labelled, promote_options="permissive")
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
