"""The ingest stage of a retrain that learns from feedback (``retrain.include_feedback`` / ``feedback_only``).

:func:`raymlops.loop.retrain.retrain_config` puts :class:`FeedbackIngestStage` in place of ``ingest``
(it runs as ``ingest``: every later stage reads its output as usual), with ``retrain.feedback_ref`` pinned
to the version the retrain published. It reads

- ``include_feedback``: ``data.ref`` (sampled by ``data.sample_fraction`` as usual) plus the feedback
  table's rows, both cut to the columns the features stage reads (:func:`training_columns`: same columns,
  so the union is made before features); the feedback rows capped at ``retrain.max_feedback_share`` of the
  union, sampled down by a seeded hash of their request id and row when there are more;
- ``feedback_only``: the feedback table's rows alone (data.ref is not read).

The lineage names both versions: ``raymlops.data_version`` (data.ref's, or the feedback table's when it
is the only source) and ``raymlops.feedback_version`` (the feedback table's).
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa

from raymlops.errors import ConfigError
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import IngestOutput, PipelineState

__all__ = ["FEEDBACK_VERSION_LINEAGE", "FeedbackIngestStage", "read_feedback_version"]

logger = logging.getLogger(__name__)

FEEDBACK_VERSION_LINEAGE = "feedback_version"  # ctx.lineage key; the register stage tags it


def read_feedback_version(cfg: Any) -> tuple[Any, pa.Table]:
    """(the version ``retrain.feedback_ref`` resolves to, its rows as one Arrow table)."""
    import ray

    from raymlops.data.refs import open_backend

    backend = open_backend(str(cfg.retrain.feedback_ref), cfg.data.lakefs, key="retrain.feedback_ref")
    version = backend.resolve()
    refs = backend.read(version).to_arrow_refs()
    tables = [t for t in ray.get(refs) if t.num_rows]
    table = pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
    return version, table


def _columns_of(table: pa.Table, columns: list[str], schema: pa.Schema | None, ref: str) -> pa.Table:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise ConfigError(
            "retrain.feedback_ref",
            f"{ref} has no column(s) {missing} the features stage reads; its columns: {table.column_names}. "
            "Publish feedback of a version served with these inputs (raymlops feedback publish).",
        )
    table = table.select(columns)
    if schema is None:
        return table
    try:
        return table.cast(pa.schema([schema.field(c) for c in columns]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ConfigError(
            "retrain.feedback_ref", f"its rows do not fit data.ref's column types ({exc})."
        ) from exc


class FeedbackIngestStage(Stage):
    name = "ingest"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        import ray

        from raymlops.data.sampling import sample_rows
        from raymlops.data.seed import open_seeded
        from raymlops.monitoring.feedback_data import cap_feedback_rows, max_feedback_rows, training_columns

        cfg = ctx.cfg
        columns = training_columns(cfg)
        feedback_version, feedback = read_feedback_version(cfg)
        ref = str(feedback_version)
        if cfg.retrain.feedback_only:
            rows = _columns_of(feedback, columns, None, ref)
            version, base_rows, dropped = feedback_version, 0, 0
            dataset = ray.data.from_arrow(rows)
        else:
            backend = open_seeded(cfg.data.ref, cfg.data.source, cfg.data.lakefs)
            version = backend.resolve()
            base = sample_rows(backend.read(version), cfg.data.sample_fraction, cfg.seed).materialize()
            base = base.select_columns(columns).materialize()
            base_rows = base.count()
            capped = cap_feedback_rows(
                feedback, max_feedback_rows(base_rows, float(cfg.retrain.max_feedback_share)), int(cfg.seed)
            )
            dropped = feedback.num_rows - capped.num_rows
            rows = _columns_of(capped, columns, base.schema().base_schema, ref)
            dataset = base.union(ray.data.from_arrow(rows))
        dataset = dataset.materialize()
        num_rows = dataset.count()
        ctx.lineage["data_version"] = str(version)
        ctx.lineage[FEEDBACK_VERSION_LINEAGE] = ref
        ctx.record(
            self.name,
            rows=num_rows,
            version=version.version,
            feedback_version=feedback_version.version,
            feedback_rows=rows.num_rows,
            feedback_sampled_out=dropped,
        )
        logger.info(
            "ingest data_version=%s feedback_version=%s rows=%d (data %d, feedback %d, %d over the cap)",
            version,
            ref,
            num_rows,
            base_rows,
            rows.num_rows,
            dropped,
        )
        return state.with_(ingest=IngestOutput(dataset, version, dataset.schema().base_schema, num_rows))
