"""evaluate: the task's metrics on the held-out split (overall, per slice, vs the task's constant baseline
and vs the current champion re-scored on the same rows); the gates decide whether the version may be
promoted. ``evaluate.gates: null`` = the task's default gates (its primary metric beats the baseline);
``evaluate.champion.max_regression: null`` = the task's tolerance, ``{}`` = no champion comparison.

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
from raymlops.data.frames import ExecutionPlan, plan_execution
from raymlops.errors import ConfigError, GateFailedError
from raymlops.evaluation.metrics import GateResult, champion_gates, gate_results, slice_metrics
from raymlops.models.export import parse_input_columns, predict_onnx
from raymlops.pipeline.context import RunContext
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import EvaluateOutput, PipelineState
from raymlops.registry.tags import INPUT_COLUMNS_TAG, RUN_ID_TAG
from raymlops.stages.evaluate_distributed import champion_graph, evaluate_distributed
from raymlops.tasks.base import Task

logger = logging.getLogger(__name__)


def _collect(ds: Any, columns: list[str]) -> pa.Table:  # ds: ray.data.Dataset of raw rows
    """The held-out split's needed columns in row order (a few MB: a test split, not the table)."""
    batches = [b.select(columns) for b in ds.iter_batches(batch_format="pyarrow", batch_size=65536)]
    return pa.concat_tables(batches) if batches else pa.table({c: [] for c in columns})


def _plan(ctx: RunContext, heldout: Any, task: Task) -> ExecutionPlan:
    """Local or distributed, from the held-out split's rows and bytes (block metadata when materialized,
    as the features stage leaves it); a task without metric partials is evaluated locally."""
    from ray.data.dataset import MaterializedDataset

    if not task.supports_partials():
        return ExecutionPlan("local", f"the {task.name} task computes no metric partials")
    if not isinstance(heldout, MaterializedDataset):
        return plan_execution(ctx.cfg.execution, 0, None)
    return plan_execution(ctx.cfg.execution, int(heldout.count()), int(heldout.size_bytes()))


def _baseline_metrics(task: Task, features: Any, y: np.ndarray, split: str) -> dict[str, float]:
    """The task's metrics of the constant prediction the features stage fitted on the train targets (the
    positive rate, the class shares, the mean): what the model must clearly beat."""
    constant = np.asarray(features.baseline_prediction or (features.train_positive_rate,), np.float64)
    pred = np.repeat(constant.reshape(1, -1), len(y), axis=0)
    return task.metrics(y, pred[:, 0] if task.output().width == 1 else pred, split)


def _champion_holder(ctx: RunContext) -> tuple[Any, Any]:  # -> (ModelRegistry, RegisteredVersion | None)
    """The version holding ``evaluate.champion.alias``, unless ``max_regression`` is ``{}`` (no comparison;
    null = the task's default tolerance)."""
    from raymlops.registry.mlflow_registry import ModelRegistry

    bounds = ctx.cfg.evaluate.champion.max_regression
    if bounds is not None and not bounds:
        return None, None
    registry = ModelRegistry.from_config(ctx.cfg.registry)
    return registry, registry.by_alias(ctx.cfg.registry.model_name, ctx.cfg.evaluate.champion.alias)


def _score_champion(
    registry: Any, holder: Any, task: Task, table: pa.Table, y: np.ndarray, split: str
) -> dict[str, Any]:
    """The champion's registered ONNX graph scored on exactly the candidate's rows, with the candidate's
    task; a champion of another task (its ``raymlops.task`` tag) is not compared, and says why."""
    outcome, champion = champion_graph(registry, holder, task, table.column_names)
    if champion is None:
        return outcome or {}
    pred = predict_onnx(champion.graph, table, champion.columns, output=champion.output)
    return {"version": holder.version, "metrics": task.metrics(y, pred, split)}


def _champion_gate_results(
    cfg: Any, task: Task, metrics: dict[str, float], champion: dict[str, Any] | None, split: str
) -> list[GateResult]:
    if champion is None or "skipped" in champion:
        return []
    label = f"champion v{champion['version']}"
    if "problem" in champion:
        return [GateResult(f"vs {label}", False, f"{label} {champion['problem']}")]
    bounds = cfg.champion.max_regression
    if bounds is None:  # the task's own tolerance (RMSE: relative to the champion's, it has units)
        max_regression = task.champion_tolerance(split, champion["metrics"])
    else:
        max_regression = {str(k): float(v) for k, v in bounds.items()}
    return champion_gates(metrics, champion["metrics"], max_regression, label, task)


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
    cacheable = True
    cache_inputs = ("ingest", "features", "train")
    cache_config = (
        "evaluate",
        "registry.model_name",
        "registry.tracking_uri",
        "data.columns",
        "data.pii",
        "execution",  # the distributed path's AUC is binned (within its reported bound)
    )

    def cache_reuse(self, ctx: RunContext, restored: PipelineState, source_run: str) -> str | None:
        """A stored evaluation holds while the champion it compared with still holds the alias, or the
        champion is now the very model it evaluated (registered by its run)."""
        _, holder = _champion_holder(ctx)
        champion = restored.require("evaluate").champion
        compared = champion["version"] if champion else None
        current = holder.version if holder is not None else None
        if current == compared or (holder is not None and holder.tags.get(RUN_ID_TAG) == source_run):
            return None
        return (
            f"the champion is {current and 'v' + current} now; the stored evaluation compared with {compared}"
        )

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.evaluate
        features, trained = state.require("features"), state.require("train")
        task: Task = features.task
        if cfg.split not in features.heldout_raw:
            raise ConfigError("evaluate.split", f"{cfg.split!r} is not a held-out split.", ["valid", "test"])
        pre = features.preprocessor
        columns = sorted({*pre.input_columns, *cfg.slices, "label"})
        missing = sorted(set(cfg.slices) - set(state.require("ingest").schema.names))
        if missing:
            known = state.require("ingest").schema.names
            raise ConfigError("evaluate.slices", f"column(s) {missing} are not in the data.", known)
        registry, holder = _champion_holder(ctx)
        split = cfg.split
        heldout = features.heldout_raw[split]
        plan = _plan(ctx, heldout, task)
        logger.info("evaluate execution=%s (%s)", plan.path, plan.reason)
        data_version = state.require("ingest").data_version
        if plan.local:
            available = set(state.require("ingest").schema.names)
            wanted = set(parse_input_columns(holder.tags.get(INPUT_COLUMNS_TAG, ""))) if holder else set()
            table = _collect(heldout, sorted({*columns, *(wanted & available)}))
            y = table["label"].to_numpy().astype(np.float64)
            pred = trained.model.predict(pre.transform(table))
            metrics = task.metrics(y, pred, split)
            baseline = _baseline_metrics(task, features, y, split)
            slices = slice_metrics(
                table,
                y,
                pred,
                task=task,
                columns=list(cfg.slices),
                split=split,
                min_rows=cfg.min_slice_rows,
                max_values=cfg.max_slice_values,
            )
            champion = (
                _score_champion(registry, holder, task, table, y, split) if holder is not None else None
            )
            picture = task.card_picture(y, pred)  # the model card's confusion matrix or scatter
            # The distribution of the candidate's test predictions: the monitor's prediction-drift reference.
            from raymlops.monitoring.version_info import prediction_profile

            profile = prediction_profile(pred, data_version, task)  # per task
            extra: dict[str, Any] = {}
        else:
            names = list(state.require("ingest").schema.names)
            done = evaluate_distributed(
                ctx, task, features, trained.model, registry, holder, names, heldout, data_version
            )
            metrics, baseline, slices, champion, picture, profile, extra = done
        slices = _mask_pii_slices(ctx.cfg, slices)
        gate_list = list(cfg.gates) if cfg.gates is not None else task.default_gates(split)
        gates = gate_results(metrics, gate_list, baseline=baseline, task=task)
        gates += _champion_gate_results(cfg, task, metrics, champion, split)
        failures = tuple(g.detail for g in gates if not g.passed)
        report_path = ctx.run_dir / "evaluation.json"
        report = {
            "split": split,
            "task": task.describe(),
            "directions": {m: "higher" if up else "lower" for m, up in task.directions.items()},
            "metrics": metrics,
            "baseline": baseline,
            "slices": slices,
            "champion": champion,
            "gates": [g.to_dict() for g in gates],
            "passed": not failures,
            "picture": picture,
            "execution": {"path": plan.path, "reason": plan.reason},
        }
        # The distributed path: how far each binned metric can be from exact, and what the driver received.
        report.update(extra)
        report_path.write_text(json.dumps(report, indent=2, default=str))
        from raymlops.monitoring.version_info import PREDICTION_PROFILE

        profile_path = ctx.run_dir / PREDICTION_PROFILE
        profile.save(profile_path)
        figures: dict[str, Any] = {"execution": plan.path, "execution_reason": plan.reason}
        if "partials" in extra:
            figures["driver_bytes_received"] = extra["partials"]["driver_bytes_received"]
        for metric in task.directions:
            name = f"{split}/{metric}"
            figures[metric] = round(metrics[name], 4)
            figures[f"baseline_{metric}"] = round(baseline[name], 4)
        primary = f"{split}/{task.primary_metric}"
        if champion is None:
            figures["champion"] = "none"
        elif "skipped" in champion:
            figures["champion"] = f"v{champion['version']} not compared (another task)"
        else:
            value = champion["metrics"].get(primary, float("nan"))
            figures["champion"] = f"v{champion['version']} {task.primary_metric} {value:.4f}"
        figures["gates"] = "passed" if not failures else f"FAILED ({len(failures)})"
        ctx.record(self.name, **figures)
        logger.info(
            "evaluate task=%s metrics=%s baseline=%s champion=%s", task.name, metrics, baseline, champion
        )
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
