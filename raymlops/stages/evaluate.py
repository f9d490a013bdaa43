"""evaluate: metrics on the held-out split (overall, per slice, vs a constant baseline and vs the current
champion re-scored on the same rows); the gates decide whether the version may be promoted.

A failed gate either stops the run here (``evaluate.on_fail=skip``: nothing is registered) or lets the
register stage record the version as ``rejected`` and then stop the run (``reject``). Aliases never move.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.config.schema import GateFailure
from raymlops.errors import ConfigError, GateFailedError
from raymlops.evaluation.metrics import (
    GateResult,
    champion_gates,
    gate_results,
    slice_metrics,
    task_metrics,
)
from raymlops.models.export import parse_input_columns, predict_onnx
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import EvaluateOutput, PipelineState
from raymlops.registry.tags import INPUT_COLUMNS_TAG

logger = logging.getLogger(__name__)

TASK = "binary"  # the label is "delay > threshold"; regression metrics serve regression labels


def _collect(ds: Any, columns: list[str]) -> pa.Table:  # ds: ray.data.Dataset of raw rows
    """The held-out split's needed columns in row order (a few MB: a test split, not the table)."""
    batches = [b.select(columns) for b in ds.iter_batches(batch_format="pyarrow", batch_size=65536)]
    return pa.concat_tables(batches) if batches else pa.table({c: [] for c in columns})


def _champion_holder(ctx: RunContext) -> tuple[Any, Any]:  # -> (ModelRegistry, RegisteredVersion | None)
    """The version holding ``evaluate.champion.alias`` when a champion gate is configured."""
    from raymlops.registry.mlflow_registry import ModelRegistry

    if not ctx.cfg.evaluate.champion.max_regression:
        return None, None
    registry = ModelRegistry.from_config(ctx.cfg.registry)
    return registry, registry.by_alias(ctx.cfg.registry.model_name, ctx.cfg.evaluate.champion.alias)


def _score_champion(registry: Any, holder: Any, table: pa.Table, y: np.ndarray, split: str) -> dict[str, Any]:
    """The champion's registered ONNX graph scored on exactly the candidate's rows."""
    columns = parse_input_columns(holder.tags.get(INPUT_COLUMNS_TAG, ""))
    missing = sorted(set(columns) - set(table.column_names))
    if missing:
        return {"version": holder.version, "metrics": {}, "problem": f"needs column(s) {missing}"}
    from raymlops.security.integrity import registered_artifact

    proba = predict_onnx(registered_artifact(registry, holder, "model.onnx"), table, columns)
    return {"version": holder.version, "metrics": task_metrics(TASK, y, proba, split)}


def _mask_pii_slices(cfg: Any, slices: dict[str, Any]) -> dict[str, Any]:
    """Slices of PII columns (``data.columns.<c>.pii``) with their values hashed, or left out under
    ``data.pii.action=drop``: the report and the model card name no subject ("<null>" stays)."""
    from raymlops.security.pii import PIIPolicy

    policy = PIIPolicy.from_config(cfg)
    private = [c for c in slices if c in policy.columns]
    if not private:
        return slices
    masker = policy.masker()
    out: dict[str, Any] = {}
    for column, rows in slices.items():  # in the report's order
        if column not in private:
            out[column] = rows
        elif masker.action == "hash":
            out[column] = [{**r, "value": _masked(masker, r["value"])} for r in rows]
    return out


def _masked(masker: Any, value: str) -> str:
    return value if value == "<null>" else masker.mask_value(value)


class EvaluateStage(Stage):
    name = "evaluate"

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.evaluate
        features, trained = state.require("features"), state.require("train")
        if cfg.split not in features.heldout_raw:
            raise ConfigError("evaluate.split", f"{cfg.split!r} is not a held-out split.", ["valid", "test"])
        pre = features.preprocessor
        columns = sorted({*pre.input_columns, *cfg.slices, "label"})
        missing = sorted(set(cfg.slices) - set(state.require("ingest").schema.names))
        if missing:
            known = state.require("ingest").schema.names
            raise ConfigError("evaluate.slices", f"column(s) {missing} are not in the data.", known)
        registry, holder = _champion_holder(ctx)
        available = set(state.require("ingest").schema.names)
        wanted = set(parse_input_columns(holder.tags.get(INPUT_COLUMNS_TAG, ""))) if holder else set()
        table = _collect(features.heldout_raw[cfg.split], sorted({*columns, *(wanted & available)}))
        y = table["label"].to_numpy().astype(np.float64)
        proba = trained.model.predict_proba(pre.transform(table))
        split = cfg.split
        metrics = task_metrics(TASK, y, proba, split)
        # The constant predictor of the train prevalence: what the model must clearly beat.
        baseline = task_metrics(TASK, y, np.full(len(y), features.train_positive_rate), split)
        slices = slice_metrics(
            table,
            y,
            proba,
            task=TASK,
            columns=list(cfg.slices),
            split=split,
            min_rows=cfg.min_slice_rows,
            max_values=cfg.max_slice_values,
        )
        slices = _mask_pii_slices(ctx.cfg, slices)
        gates = gate_results(metrics, cfg.gates)
        champion = _score_champion(registry, holder, table, y, split) if holder is not None else None
        if champion is not None:
            label = f"champion v{champion['version']}"
            if "problem" in champion:
                gates.append(GateResult(f"vs {label}", False, f"{label} {champion['problem']}"))
            else:
                max_regression = {str(k): float(v) for k, v in cfg.champion.max_regression.items()}
                gates += champion_gates(metrics, champion["metrics"], max_regression, label)
        failures = tuple(g.detail for g in gates if not g.passed)
        report_path = ctx.run_dir / "evaluation.json"
        report = {
            "split": split,
            "task": TASK,
            "metrics": metrics,
            "baseline": baseline,
            "slices": slices,
            "champion": champion,
            "gates": [g.to_dict() for g in gates],
            "passed": not failures,
        }
        report_path.write_text(json.dumps(report, indent=2, default=str))
        # The distribution of the candidate's test predictions: the monitor's prediction-drift reference.
        from raymlops.monitoring.version_info import PREDICTION_PROFILE, prediction_profile

        profile_path = ctx.run_dir / PREDICTION_PROFILE
        prediction_profile(proba, state.require("ingest").data_version).save(profile_path)
        auc, logloss = f"{split}/auc", f"{split}/logloss"
        ctx.record(
            self.name,
            auc=round(metrics[auc], 4),
            baseline_auc=round(baseline[auc], 4),
            logloss=round(metrics[logloss], 4),
            baseline_logloss=round(baseline[logloss], 4),
            accuracy=round(metrics[f"{split}/accuracy"], 4),
            champion=f"v{champion['version']} auc {champion['metrics'].get(auc, float('nan')):.4f}"
            if champion
            else "none",
            gates="passed" if not failures else f"FAILED ({len(failures)})",
        )
        logger.info("evaluate metrics=%s baseline=%s champion=%s", metrics, baseline, champion)
        if failures and cfg.on_fail == GateFailure.skip:
            raise GateFailedError(list(failures), metrics)
        output = EvaluateOutput(
            metrics,
            baseline,
            not failures,
            failures,
            tuple(gates),
            slices,
            champion,
            report_path,
            profile_path,
        )
        return state.with_(evaluate=output)
