"""The evaluate stage's distributed path: the held-out split scored per block in Ray tasks, merged from
mergeable partials (raymlops.evaluation.partials); the driver never holds the split's rows.

Everything the local path reports comes from the same partials: the task's metrics (exact, but ROC AUC,
which is binned: its computed error bound goes into ``metric_bounds``), the constant baseline's, the
champion's on the same rows, the slices (the ``max_slice_values`` most frequent values by merged counts,
``min_slice_rows`` as locally), the model card's picture (a confusion matrix from merged counts; the
regression scatter from a bounded sample chosen by row content) and the prediction profile (merged column
statistics with their quantile sketch).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from raymlops.evaluation.metrics import _finite
from raymlops.evaluation.partials import ChampionGraph, Merged, score_partials, slice_values
from raymlops.models.export import parse_input_columns
from raymlops.pipeline.context import RunContext
from raymlops.registry.tags import INPUT_COLUMNS_TAG, TASK_TAG
from raymlops.tasks.base import Task

__all__ = ["champion_graph", "evaluate_distributed"]

logger = logging.getLogger(__name__)


def _slices(task: Task, merged: Merged, chosen: dict[str, list[tuple[str, int]]], split: str, min_rows: int):
    """The local path's slice rows from merged partials, and the approximate metrics' bounds per slice."""
    out: dict[str, list[dict[str, Any]]] = {}
    bounds: dict[str, dict[str, dict[str, float]]] = {}
    for column, values in chosen.items():
        rows = []
        for value, count in values:
            row: dict[str, Any] = {"value": value, "rows": int(count)}
            parts = merged.slices.get((column, value))
            if count >= min_rows and parts is not None:
                metrics = task.metrics_from_partials(parts, split)
                row |= {k.split("/", 1)[1]: _finite(v) for k, v in metrics.items() if not k.endswith("/rows")}
                found = task.metric_bounds(parts, split)
                if found:
                    bounds.setdefault(column, {})[value] = {k.split("/", 1)[1]: v for k, v in found.items()}
            rows.append(row)
        out[column] = rows
    return out, bounds


def champion_graph(
    registry: Any, holder: Any, task: Task, available: list[str]
) -> tuple[dict[str, Any] | None, ChampionGraph | None]:
    """(the comparison's outcome when there is nothing to score, else None; the champion's graph): a
    champion of another task (its ``raymlops.task`` tag) is not compared, and says why."""
    from raymlops.tasks.codec import task_from_json

    theirs = task_from_json(holder.tags.get(TASK_TAG))
    if not task.comparable(theirs):
        reason = f"answers another task ({theirs.describe()}; this model: {task.describe()})"
        logger.warning("champion comparison skipped version=%s: %s", holder.version, reason)
        return {"version": holder.version, "metrics": {}, "skipped": reason}, None
    columns = parse_input_columns(holder.tags.get(INPUT_COLUMNS_TAG, ""))
    missing = sorted(set(columns) - set(available))
    if missing:
        return {"version": holder.version, "metrics": {}, "problem": f"needs column(s) {missing}"}, None
    from raymlops.security.integrity import registered_artifact

    graph = registered_artifact(registry, holder, "model.onnx")
    return None, ChampionGraph(graph, dict(columns), theirs.output().name)


def evaluate_distributed(
    ctx: RunContext,
    task: Task,
    features: Any,
    model: Any,
    registry: Any,
    holder: Any,
    available: list[str],
    heldout: Any,
    data_version: str,
) -> tuple[dict[str, float], dict[str, float], dict[str, Any], dict[str, Any] | None, Any, Any, dict]:
    """(metrics, baseline, slices, champion, picture, prediction profile, the report's extra entries:
    ``metric_bounds`` and ``partials``) of ``heldout`` (a ``ray.data.Dataset``) scored block by block."""
    from raymlops.data.stats import table_stats
    from raymlops.monitoring.version_info import (
        prediction_profile_from_stats,
        prediction_statistic_table,
        statistic_column,
    )

    cfg = ctx.cfg.evaluate
    split = cfg.split
    champion_result, graph = None, None
    if holder is not None:
        champion_result, graph = champion_graph(registry, holder, task, available)
    chosen = slice_values(heldout, list(cfg.slices), int(cfg.max_slice_values))
    constant = np.asarray(features.baseline_prediction or (features.train_positive_rate,), np.float64)
    merged = score_partials(
        heldout,
        task=task,
        pre=features.preprocessor,
        model=model,
        constant=constant,
        champion=graph,
        slices={c: [v for v, n in values if n >= cfg.min_slice_rows] for c, values in chosen.items()},
        seed=int(ctx.cfg.seed),
    )
    logger.info("evaluate distributed: %d blocks, %d bytes of partials", merged.blocks, merged.bytes_received)
    if merged.metrics is None:  # no block at all: the task's figures of no rows
        width = task.output().width
        merged.metrics = task.metric_partials(
            np.zeros(0), np.zeros(0) if width == 1 else np.zeros((0, width))
        )
    metrics = task.metrics_from_partials(merged.metrics, split)
    baseline = task.metrics_from_partials(merged.baseline or merged.metrics, split)
    bounds: dict[str, Any] = {"metrics": task.metric_bounds(merged.metrics, split)}
    bounds["baseline"] = task.metric_bounds(merged.baseline or merged.metrics, split)
    champion = champion_result
    if graph is not None and merged.champion is not None:
        champion = {"version": holder.version, "metrics": task.metrics_from_partials(merged.champion, split)}
        bounds["champion"] = task.metric_bounds(merged.champion, split)
    slices, bounds["slices"] = _slices(task, merged, chosen, split, int(cfg.min_slice_rows))
    sample = None if merged.sample is None else (merged.sample[1], merged.sample[2])
    picture = task.card_picture_from_partials(merged.metrics, sample)
    stats = {statistic_column(task): merged.prediction_stats}
    if merged.prediction_stats is None:  # no block: the statistics of no predictions
        width = task.output().width
        stats = table_stats(
            prediction_statistic_table(
                np.zeros((0, width)).squeeze(axis=1) if width == 1 else np.zeros((0, width)), task
            )
        )
    rows = int(merged.metrics["rows"])
    profile = prediction_profile_from_stats(stats, rows, data_version, task)
    extra = {
        "metric_bounds": {k: v for k, v in bounds.items() if v},
        "partials": {"blocks": merged.blocks, "driver_bytes_received": merged.bytes_received},
    }
    return metrics, baseline, slices, champion, picture, profile, extra
