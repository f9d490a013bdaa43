"""features: label, time split, preprocessing fitted on train only, applied to every split with Ray Data."""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from raymlops.data.splits import parse_instant, time_split, with_binary_label
from raymlops.data.stats import compute_stats
from raymlops.errors import ConfigError
from raymlops.features.preprocess import FittedPreprocessor, fit_preprocessor
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import FeaturesOutput, PipelineState

if TYPE_CHECKING:
    from raymlops.data.versioning import DataVersion

logger = logging.getLogger(__name__)


def _to_xy(batch: pa.Table, pre: FittedPreprocessor) -> dict[str, np.ndarray]:
    return {"x": pre.transform(batch), "y": batch["label"].to_numpy().astype(np.float32)}


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


class FeaturesStage(Stage):
    name = "features"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.features
        leaking = sorted((set(cfg.numeric) | set(cfg.categorical)) & set(cfg.forbidden))
        if leaking:
            raise ConfigError(
                "features", f"column(s) {leaking} are in features.forbidden (they leak the label)."
            )
        rows = state.require("ingest").dataset
        if cfg.views:  # feature views joined point-in-time onto every row, before any split or statistic
            rows = _join_feature_views(ctx, rows, state.require("ingest").version)
        # Materialized once: each of the three splits filters it, and the label must not be recomputed.
        dataset = with_binary_label(rows, cfg.label.column, cfg.label.threshold).materialize()
        splits = time_split(
            dataset,
            cfg.split.time_column,
            parse_instant(cfg.split.valid_start, "features.split.valid_start"),
            parse_instant(cfg.split.test_start, "features.split.test_start"),
        )
        train_raw, valid_raw, test_raw = (s.materialize() for s in splits)
        split_rows = {"train": train_raw.count(), "valid": valid_raw.count(), "test": test_raw.count()}
        empty = [name for name, rows in split_rows.items() if rows == 0]
        if empty:
            raise ConfigError(
                "features.split", f"split(s) {empty} are empty with rows {split_rows}; move the dates."
            )
        train_stats = compute_stats(train_raw, [*cfg.numeric, *cfg.categorical, "label"])
        pre = fit_preprocessor(
            train_stats,
            list(cfg.numeric),
            list(cfg.categorical),
            max_categories=cfg.max_categories,
            min_frequency=cfg.min_frequency,
        )
        to_xy = partial(_to_xy, pre=pre)
        train, valid, test = (
            raw.map_batches(to_xy, batch_format="pyarrow", batch_size=8192)
            for raw in (train_raw, valid_raw, test_raw)
        )
        # The table is in time order: without a global shuffle each epoch would end on the latest
        # months and bias the model towards them (seen: test log loss worse than a constant).
        train = train.random_shuffle(seed=ctx.cfg.seed).materialize()
        valid, test = valid.materialize(), test.materialize()
        raw_sample = test_raw.take_batch(ctx.cfg.export.parity_rows, batch_format="pyarrow")
        time_column = cfg.split.time_column
        first, last = train_raw.min(time_column), train_raw.max(time_column)
        # A random, bounded sample of train rows: the background SHAP explainers integrate over.
        wanted = ctx.cfg.explain.background_rows
        fraction = min(1.0, 4.0 * wanted / max(split_rows["train"], 1))
        background = train_raw.random_sample(fraction, seed=ctx.cfg.seed).take_batch(
            wanted, batch_format="pyarrow"
        )
        ctx.record(
            self.name,
            features=pre.num_features,
            train_positive_rate=round(train_stats["label"].mean, 4),
            **{f"{k}_rows": v for k, v in split_rows.items()},
        )
        logger.info("features splits=%s features=%d", split_rows, pre.num_features)
        return state.with_(
            features=FeaturesOutput(
                train,
                valid,
                test,
                pre,
                raw_sample,
                split_rows,
                train_stats["label"].mean,
                heldout_raw={"valid": valid_raw, "test": test_raw},
                background=background,
                train_time_range=(str(first), str(last)),
            )
        )
