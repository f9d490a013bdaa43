"""features: split (time or hash), the task (inferred from the train split's label), its target, and the
preprocessing fitted on train only, applied to every split.

Each step runs its kernels with Ray Data over the ingested blocks, or, when the input is small enough
(``execution.*``), on one pyarrow Table in this process: the same kernels (``raymlops.data.frames``), and
the same Datasets handed on to train, evaluate and the step cache."""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from raymlops.data.frames import ExecutionPlan, collect, frame, plan_execution, to_dataset, xy_dataset
from raymlops.data.hash_splits import SPLITS
from raymlops.data.labelled_splits import (
    LABEL,
    check_label_column,
    drop_null_labels,
    label_summary,
    split_dataset,
    with_target,
)
from raymlops.data.sampling import sample_rows
from raymlops.data.stats import compute_stats
from raymlops.errors import ConfigError
from raymlops.features.preprocess import FittedPreprocessor, fit_preprocessor
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import FeaturesOutput, PipelineState
from raymlops.tasks.base import Task
from raymlops.tasks.codec import task_to_json
from raymlops.tasks.infer import resolve_task

if TYPE_CHECKING:
    from raymlops.data.versioning import DataVersion

logger = logging.getLogger(__name__)


def _to_xy(batch: pa.Table, pre: FittedPreprocessor) -> dict[str, np.ndarray]:
    return {"x": pre.transform(batch), "y": batch[LABEL].to_numpy().astype(np.float32)}


def _model_inputs(raw: Any, pre: FittedPreprocessor, seed: int | None):  # -> ray.data.Dataset
    """``raw`` as the model's {x, y}, materialized; shuffled by ``seed`` unless it is None."""
    to_xy = partial(_to_xy, pre=pre)
    if isinstance(raw, pa.Table):
        xy = to_xy(raw)
        if seed is not None:
            order = np.random.default_rng(seed).permutation(raw.num_rows)
            xy = {name: values[order] for name, values in xy.items()}
        return xy_dataset(xy["x"], xy["y"])
    ds = raw.map_batches(to_xy, batch_format="pyarrow", batch_size=8192)
    return (ds if seed is None else ds.random_shuffle(seed=seed)).materialize()


def _plan(ctx: RunContext, ingest: Any) -> ExecutionPlan:
    """Local or distributed, from the ingested rows and bytes (block metadata of a materialized Dataset)."""
    from ray.data.dataset import MaterializedDataset

    ds = ingest.dataset
    size = int(ds.size_bytes()) if isinstance(ds, MaterializedDataset) else None
    return plan_execution(ctx.cfg.execution, int(ingest.num_rows), size)


def _join_feature_views(ctx: RunContext, rows, data_version: DataVersion):  # -> ray.data.Dataset
    """``features.views`` joined as of ``features.event_time``; their data versions go into the lineage."""
    from raymlops.features.pit_join import join_views
    from raymlops.features.views import load_views

    cfg = ctx.cfg.features
    views = load_views(ctx.cfg)
    # A view over the training table itself (flight history) reads the very version the rows come from.
    versions = {v.name: data_version for v in views if v.source.ref == ctx.cfg.data.ref}
    joined, resolved = join_views(rows, views, cfg.event_time, versions=versions)
    ctx.lineage["feature_views"] = resolved
    ctx.record("features", views=",".join(resolved))
    return joined


def _instant(epoch_seconds: float | None) -> str:
    if epoch_seconds is None:
        return ""
    return str(dt.datetime.fromtimestamp(epoch_seconds, tz=dt.timezone.utc))


def _task(cfg, column: str, train_raw, valid_raw, test_raw) -> tuple[Task, str, dict[Any, int] | None]:
    """The configured or inferred task, from the train split's label; the held-out splits' labels must be
    values the task knows (a class first seen in test cannot be predicted)."""
    limit = int(cfg.max_classes)
    summary = label_summary(train_raw, column, limit)
    task, reason = resolve_task(
        str(cfg.task),
        column,
        summary,
        threshold=cfg.label.threshold,
        positive=cfg.label.positive,
        max_classes=limit,
    )
    for name, raw in (("valid", valid_raw), ("test", test_raw)):
        unknown = task.unknown_values(label_summary(raw, column, limit).values)
        if unknown:
            raise ConfigError(
                "features.split",
                f"{column!r} takes value(s) {unknown[:10]} in the {name} split that the train split never "
                f"has ({summary.values[:20]}): a model cannot predict them. Use "
                "features.split.kind=stratified, or drop those rows from the data.",
            )
    return task, reason, summary.counts


class FeaturesStage(Stage):
    name = "features"
    cacheable = True
    cache_inputs = ("ingest",)
    # execution: the local and distributed paths give the same rows, but train in another shuffled order.
    cache_config = (
        "features",
        "seed",
        "data.ref",
        "export.parity_rows",
        "explain.background_rows",
        "execution",
    )

    def cache_key_extra(self, ctx: RunContext) -> dict[str, Any] | None:
        # Feature views read tables of their own, whose versions the key does not hold: not cached.
        return None if ctx.cfg.features.views else {}

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.features
        leaking = sorted((set(cfg.numeric) | set(cfg.categorical)) & set(cfg.forbidden))
        if leaking:
            raise ConfigError(
                "features", f"column(s) {leaking} are in features.forbidden (they leak the label)."
            )
        ingest = state.require("ingest")
        plan = _plan(ctx, ingest)
        logger.info("features execution=%s (%s)", plan.path, plan.reason)
        column = cfg.label.column
        rows = ingest.dataset
        if not cfg.views:  # joined views add columns; without them the ingested schema is the table's
            check_label_column(ingest.schema, column)
        if cfg.views:  # feature views joined point-in-time onto every row, before any split or statistic
            rows = _join_feature_views(ctx, rows, ingest.version)
        if plan.local:  # one Table in this process from here on; the same kernels run on it
            rows = ingest.table if ingest.table is not None and not cfg.views else collect(rows)
        limit = int(cfg.max_classes)
        train_raw, valid_raw, test_raw = split_dataset(
            drop_null_labels(rows, column), cfg.split, column, limit
        )
        task, reason, train_counts = _task(cfg, column, train_raw, valid_raw, test_raw)
        logger.info("features task=%s (%s)", task.name, reason)
        ctx.lineage["task"] = task_to_json(task)
        # Materialized once: statistics, the transform and evaluation all read the target.
        train_raw, valid_raw, test_raw = (
            frame(with_target(raw, column, task)).materialize().data
            for raw in (train_raw, valid_raw, test_raw)
        )
        raws = (train_raw, valid_raw, test_raw)
        split_rows = {name: frame(raw).count() for name, raw in zip(SPLITS, raws, strict=True)}
        timed = [cfg.split.time_column] if cfg.split.kind == "time" else []
        # The time column's range comes with the one statistics pass: Ray Data's min() and max() start
        # their own aggregation actors each (18 s apiece on the quickstart's train split).
        train_stats = compute_stats(train_raw, [*cfg.numeric, *cfg.categorical, LABEL, *timed])
        pre = fit_preprocessor(
            train_stats,
            list(cfg.numeric),
            list(cfg.categorical),
            max_categories=cfg.max_categories,
            min_frequency=cfg.min_frequency,
        )
        # The table is in time order: without a global shuffle each epoch would end on the latest
        # months and bias the model towards them (seen: test log loss worse than a constant).
        train = _model_inputs(train_raw, pre, ctx.cfg.seed)
        valid, test = _model_inputs(valid_raw, pre, None), _model_inputs(test_raw, pre, None)
        raw_sample = frame(test_raw).head(ctx.cfg.export.parity_rows)
        time_range = None
        if timed:  # epoch seconds in the statistics
            span = train_stats[timed[0]]
            time_range = (_instant(span.min), _instant(span.max))
        # A random, bounded sample of train rows: the background SHAP explainers integrate over. Kept by
        # each row's content hash, so both paths keep the same rows.
        wanted = ctx.cfg.explain.background_rows
        fraction = min(1.0, 4.0 * wanted / max(split_rows["train"], 1))
        background = frame(sample_rows(train_raw, fraction, ctx.cfg.seed)).head(wanted)
        ctx.record(
            self.name,
            execution=plan.path,
            execution_reason=plan.reason,
            features=pre.num_features,
            task=task.name,
            split=cfg.split.kind,
            train_target_mean=round(train_stats[LABEL].mean, 4),
            **{f"{k}_rows": v for k, v in split_rows.items()},
        )
        baseline = task.constant_prediction(train_stats[LABEL].mean, train_counts)
        logger.info("features splits=%s features=%d", split_rows, pre.num_features)
        return state.with_(
            features=FeaturesOutput(
                train,
                valid,
                test,
                pre,
                raw_sample,
                split_rows,
                train_stats[LABEL].mean,
                heldout_raw={"valid": to_dataset(valid_raw), "test": to_dataset(test_raw)},
                background=background,
                train_time_range=time_range,
                task=task,
                task_reason=reason,
                split_kind=str(cfg.split.kind),
                baseline_prediction=tuple(float(v) for v in baseline),
            )
        )
