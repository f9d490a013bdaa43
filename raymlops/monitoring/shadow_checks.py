"""The monitor's shadow section: a shadow version's answers against the served ones on the same rows,
and its latency beside theirs, from the prediction log.

A shadow version logs its rows with ``route=shadow`` under the ``prediction_id`` of the request it
mirrored (:mod:`raymlops.monitoring.prediction_log`). :func:`shadow_rows` reads the window's shadow rows
and the served rows of the same requests; :func:`shadow_section` pairs them by ``(prediction_id, row)``
and, per shadow version and per version that answered, asks the served version's task how often the
two agree (``Task.agreement``: binary, each version's label; multiclass, the same class; regression,
values within the task's tolerance) and compares the latency of the same requests (p50/p99 over
requests, not rows). A shadow of another task than the served version's is counted, not compared.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from raymlops.monitoring.prediction_log import OUTPUT_NAMES, PREDICTIONS_DIR, log_pred

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = ["registered_task", "shadow_rows", "shadow_section"]

_KEYS = ("prediction_id", "row", "version", "route", "latency_ms")


def shadow_rows(root: str | os.PathLike[str], model: str, since: dt.datetime, until: dt.datetime) -> pa.Table:
    """The window's ``route=shadow`` rows of ``model`` and the served rows of the same requests (the
    prediction-log columns the comparison needs, no features); empty when nothing was shadowed."""
    import pyarrow.dataset as ds

    from raymlops.monitoring.parquet_log import read_log
    from raymlops.monitoring.prediction_log import _window

    base = f"{os.fspath(root).rstrip('/')}/{PREDICTIONS_DIR}"
    partition, row = _window(since, until)
    where = ds.field("model") == model
    where = where if partition is None else where & partition
    shadow_filter = ds.field("route") == "shadow"
    shadows = read_log(
        base,
        ("model", "date"),
        partition_filter=where,
        row_filter=shadow_filter if row is None else shadow_filter & row,
    )
    if shadows is None or shadows.num_rows == 0:
        return pa.table({k: pa.array([], pa.string()) for k in ("prediction_id", "route")})
    ids = pc.unique(shadows["prediction_id"])
    # The answer was logged just before its shadow: the same partitions, without the window's lower
    # bound on ``ts`` (a request answered just before ``since`` may be shadowed just after it).
    served = read_log(
        base,
        ("model", "date"),
        partition_filter=where,
        row_filter=(ds.field("route") == "served") & ds.field("prediction_id").isin(ids),
    )
    parts = [_select(shadows)] + ([_select(served)] if served is not None else [])
    return pa.concat_tables(parts, promote_options="permissive")


def _select(table: pa.Table) -> pa.Table:
    return table.select([c for c in (*_KEYS, *OUTPUT_NAMES, "probability") if c in table.column_names])


def registered_task(registered: Mapping[str, Any], version: str) -> Task:
    """The task a registered version's ``raymlops.task`` tag names (the legacy binary task without one,
    or for a version the registry does not hold)."""
    from raymlops.registry.tags import TASK_TAG
    from raymlops.tasks.codec import LEGACY_TASK, task_from_json

    found = registered.get(version)
    tag = found.tags.get(TASK_TAG) if found is not None else None
    try:
        return task_from_json(tag) if tag else LEGACY_TASK
    except Exception:  # a tag a newer raymlops wrote: version_info already warns about it
        return LEGACY_TASK


def shadow_section(rows: pa.Table, task_of: Callable[[str], Task]) -> dict[str, dict[str, Any]]:
    """Per shadow version: ``{"rows", "requests", "against": {served_version: COMPARISON}}`` where
    COMPARISON is ``{"rows", "requests", "compared", "agreement", "mean_abs_diff", "latency_ms":
    {"shadow": {"p50", "p99"}, "served": {"p50", "p99"}}}`` over the rows both logged."""
    if rows.num_rows == 0 or "route" not in rows.column_names:
        return {}
    route = rows["route"]
    shadows = rows.filter(pc.equal(route, "shadow"))
    served = rows.filter(pc.equal(route, "served"))
    served_keys = _keys(served)
    out: dict[str, dict[str, Any]] = {}
    for version in sorted(set(shadows["version"].to_pylist())):
        mine = shadows.filter(pc.equal(shadows["version"], version))
        where = pc.index_in(_keys(mine), value_set=served_keys)
        matched = pc.is_valid(where)
        mine, theirs = mine.filter(matched), served.take(pc.drop_null(where))
        entry: dict[str, Any] = {
            "rows": len(matched),
            "requests": _requests(shadows.filter(pc.equal(shadows["version"], version))),
            "unmatched_rows": int(len(matched) - mine.num_rows),  # the answer's row outside the read
            "against": {},
        }
        for answered in sorted(set(theirs["version"].to_pylist())):
            pick = pc.equal(theirs["version"], answered)
            entry["against"][answered] = _compare(
                mine.filter(pick), theirs.filter(pick), task_of(answered), task_of(version)
            )
        out[version] = entry
    return out


def _keys(table: pa.Table) -> pa.Array:
    return pc.binary_join_element_wise(table["prediction_id"], pc.cast(table["row"], pa.string()), ":")


def _requests(table: pa.Table) -> int:
    return len(pc.unique(table["prediction_id"]))


def _compare(shadow: pa.Table, served: pa.Table, served_task: Task, shadow_task: Task) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rows": shadow.num_rows,
        "requests": _requests(shadow),
        "latency_ms": {"shadow": _latency(shadow), "served": _latency(served)},
        "compared": False,
        "agreement": None,
        "mean_abs_diff": None,
    }
    if not served_task.comparable(shadow_task):
        out["note"] = f"a {shadow_task.name} shadow of a {served_task.name} version: answers not compared"
        return out
    mine, theirs = log_pred(shadow, shadow_task), log_pred(served, served_task)
    if mine.shape != theirs.shape or mine.size == 0 or np.isnan(mine).any() or np.isnan(theirs).any():
        out["note"] = "the logged rows hold no comparable predictions"
        return out
    # Thresholds: the served task's decision (the router's per-spec threshold is not logged).
    agreement, mean_abs_diff = served_task.agreement(theirs, mine)
    out.update(compared=True, agreement=_round(agreement), mean_abs_diff=_round(mean_abs_diff))
    return out


def _latency(table: pa.Table) -> dict[str, float | None]:
    """p50/p99 over requests: a request's rows all carry its latency, so each counts once."""
    _, first = np.unique(table["prediction_id"].to_numpy(zero_copy_only=False), return_index=True)
    values = table["latency_ms"].to_numpy(zero_copy_only=False).astype(np.float64)[first]
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"p50": None, "p99": None}
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": _round(p50), "p99": _round(p99)}


def _round(value: float) -> float:
    return float(f"{float(value):.6g}")
