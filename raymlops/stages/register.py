"""register: metrics, reports, SHAP and the ONNX model into the job's MLflow run; a model version with
lineage tags (the task among them: ``raymlops.task``, on the version and the run), its alias (when every
gate passed) or the ``rejected`` lifecycle, an audit record, and a generated model card in the version's
folder (the task, its metrics with their direction, and the picture of the test predictions that fits)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from raymlops.errors import GateFailedError
from raymlops.evaluation.model_card.picture import PICTURE_SVG_NAME
from raymlops.features.online.lookup import lookup_for_config
from raymlops.pipeline.context import RunContext, git_sha
from raymlops.pipeline.stage import Stage
from raymlops.pipeline.state import PipelineState, RegisterOutput
from raymlops.registry.governance import UNCHANGED, Governance
from raymlops.registry.mlflow_registry import ModelRegistry
from raymlops.registry.tags import (
    CONFIG_DIGEST_TAG,
    DATA_VERSION_TAG,
    ENV_TAG,
    EVALUATION_REPORT_TAG,
    FEATURE_EVENT_TIME_TAG,
    FEATURE_LOOKUP_TAG,
    FEATURE_VIEWS_TAG,
    FEEDBACK_VERSION_TAG,
    GATES_TAG,
    GIT_SHA_TAG,
    INPUT_COLUMNS_TAG,
    LIFECYCLE_TAG,
    MODEL_NAME_TAG,
    MODEL_VERSION_TAG,
    PARENT_TAG,
    RUN_ID_TAG,
    RUN_NAME_TAG,
    SEED_TAG,
    TAG_PREFIX,
    TASK_TAG,
    VALIDATION_REPORT_TAG,
)
from raymlops.security.crypto import active_keyring, is_encrypted, read_maybe_encrypted, write_encrypted
from raymlops.security.integrity import Signer, digest_bytes, integrity_tags
from raymlops.tasks.codec import task_to_json


class RegisterStage(Stage):
    name = "register"
    cacheable = True
    # cache_inputs / cache_config None: every earlier stage and the whole config but serve, monitor, retrain,
    # loop and ray (it reads much of it: the tags, the card, governance, signing).

    def cache_reuse(self, ctx: RunContext, restored: PipelineState, source_run: str) -> str | None:
        """The stored version is reused (no duplicate) while it exists, keeps its lifecycle and holds the
        aliases it was given; the job's MLflow run then names it, as a registering run does."""
        from raymlops.errors import ModelNotFoundError

        out = restored.require("register")
        registry = ModelRegistry.from_config(ctx.cfg.registry)
        try:
            version = registry.version(out.model_name, out.version)
        except ModelNotFoundError:
            return f"{out.model_name} v{out.version} is no longer registered"
        if version.lifecycle != out.lifecycle:
            return f"{out.model_name} v{out.version} is {version.lifecycle} now, not {out.lifecycle}"
        moved = [a for a in out.aliases if a not in version.aliases]
        if moved:
            return f"alias(es) {moved} moved away from {out.model_name} v{out.version}"
        if ctx.tracker is not None:
            task = version.tags.get(TASK_TAG, "")
            ctx.tracker.set_tags(
                {MODEL_NAME_TAG: out.model_name, MODEL_VERSION_TAG: out.version, TASK_TAG: task}
            )
        return None

    def _run(self, ctx: RunContext, state: PipelineState) -> PipelineState:
        cfg = ctx.cfg.registry
        ingest, evaluated, exported = (
            state.require("ingest"),
            state.require("evaluate"),
            state.require("export"),
        )
        tracker = ctx.tracker
        if tracker is None:  # run_pipeline opens the job's run for any pipeline with this stage
            raise RuntimeError("register needs the job's MLflow run: run it through run_pipeline.")
        tracker.log_metrics(
            {**evaluated.metrics, **{f"baseline/{k}": v for k, v in evaluated.baseline.items()}},
            state.require("train").history,
        )
        run_uri = tracker.registry.client.get_run(tracker.run_id).info.artifact_uri
        reports: list[Path] = [p for p in [evaluated.report_path] if p is not None]
        model_files: list[Path] = [exported.onnx_path]
        if evaluated.prediction_profile_path is not None:
            model_files.append(evaluated.prediction_profile_path)
        validation = state.validate
        if validation is not None:
            # The training data's profile travels with the model: monitoring compares live traffic to it.
            model_files.append(validation.profile_path)
            reports += [validation.report_path, validation.html_path]
        explained = state.explain
        explainer_files: list[Path] = []
        if explained is not None:
            model_files += [explained.summary_json, explained.plot_png]
            explainer_files = sorted(explained.explainer_dir.iterdir())
        # Digests of the plaintext (a KEK rotation changes no digest); then, with encryption on, the
        # files are encrypted in place: the run folder and the artifact store hold no plaintext.
        digests = {p.name: _digest(p) for p in model_files}
        digests |= {f"explainer/{p.name}": _digest(p) for p in explainer_files}
        for path in [*reports, *model_files, *explainer_files]:
            _seal(path)
        signer = Signer.from_config(ctx.cfg.security.signing)
        tracker.log_artifacts("reports", reports)
        if explainer_files:
            tracker.log_artifacts("model/explainer", explainer_files)
        passed = evaluated.passed
        tags = {
            RUN_ID_TAG: ctx.run_id,
            RUN_NAME_TAG: str(ctx.cfg.run_name),
            ENV_TAG: str(ctx.cfg.env.name),
            GIT_SHA_TAG: git_sha(),
            DATA_VERSION_TAG: ingest.data_version,
            SEED_TAG: str(ctx.cfg.seed),
            INPUT_COLUMNS_TAG: ",".join(f"{k}:{v}" for k, v in exported.input_columns.items()),
            CONFIG_DIGEST_TAG: tracker.config_digest,
            PARENT_TAG: str(cfg.parent_version or ""),
            EVALUATION_REPORT_TAG: f"{run_uri}/reports/evaluation.json",
            VALIDATION_REPORT_TAG: f"{run_uri}/reports/{validation.report_path.name}"
            if validation is not None
            else "",
            GATES_TAG: "passed" if passed else "failed",
            LIFECYCLE_TAG: "candidate",
            TASK_TAG: task_to_json(state.require("features").task),  # serving's answer shape, and more
            **integrity_tags(digests, signer),
        }
        feedback = ctx.lineage.get("feedback_version")
        if feedback:  # a retrain that learnt from feedback (raymlops.loop.feedback_ingest): its version too
            tags[FEEDBACK_VERSION_TAG] = str(feedback)
        views = ctx.lineage.get("feature_views")
        if views:  # the feature views joined in training, each at its resolved data version
            tags[FEATURE_VIEWS_TAG] = ";".join(f"{name}={ref}" for name, ref in views.items())
            tags[FEATURE_EVENT_TIME_TAG] = str(ctx.cfg.features.event_time)
            lookup = lookup_for_config(ctx.cfg, exported.input_columns)
            if lookup is not None:  # what serving fetches from the online store by the request's keys
                tags[FEATURE_LOOKUP_TAG] = lookup.to_json()
        registry = ModelRegistry.from_config(cfg)
        env = str(ctx.cfg.env.name)
        governance = Governance(registry, env=env)
        name = cfg.model_name
        version = registry.register_version(
            model_name=name, run_id=tracker.run_id, model_files=model_files, tags=tags, env=env
        )
        # An MLflow model too (MLmodel, signature, example), before any alias names it: tagged below.
        digests |= _log_mlflow_model(ctx, state, tracker, version.version, digests[exported.onnx_path.name])
        governance.audit(
            "register",
            name,
            f"job {ctx.run_id}",
            to_version=version.version,
            run_id=tracker.run_id,
            details={"data_version": ingest.data_version, "gates": tags[GATES_TAG]},
        )
        aliases: tuple[str, ...] = ()
        if not passed:
            governance.set_lifecycle(
                name, version.version, "rejected", why="; ".join(evaluated.failures), run_id=tracker.run_id
            )
        elif cfg.on_pass.value != "none":
            # Compare-and-set against the champion the gates compared with: if it moved meanwhile, this
            # version stays a candidate and the run fails (AliasConflictError) instead of racing it.
            gate = ctx.cfg.evaluate.champion
            expected: Any = UNCHANGED
            alias = str(cfg.on_pass.value)
            if alias == gate.alias and gate.max_regression:
                expected = evaluated.champion["version"] if evaluated.champion else None
            governance.set_alias(
                name,
                alias,
                version.version,
                why=f"passed every gate in job {ctx.run_id}",
                action="register",
                expected=expected,
                run_id=tracker.run_id,
            )
            aliases = (alias,)
        lifecycle = registry.version(name, version.version).lifecycle
        tracker.set_tags({MODEL_NAME_TAG: name, MODEL_VERSION_TAG: version.version, TASK_TAG: tags[TASK_TAG]})
        ctx.lineage.update(tags | {LIFECYCLE_TAG: lifecycle})
        card_dir = ctx.run_dir / "model_card"
        _write_card(ctx, state, version.version, {**tags, LIFECYCLE_TAG: lifecycle}, card_dir)
        cards = sorted([*card_dir.glob("model_card.*"), *card_dir.glob(PICTURE_SVG_NAME)])
        tracker.log_artifacts("model", cards)
        digests |= {p.name: _digest(p) for p in cards}  # the card comes after the version: tagged now
        with registry.locked():  # SQLite takes one writer at a time (see ModelRegistry.locked)
            for key, value in integrity_tags(digests, signer).items():
                registry.client.set_model_version_tag(name, version.version, key, value)
        ctx.record(
            self.name,
            model=f"{version.name} v{version.version}",
            lifecycle=lifecycle,
            aliases=",".join(aliases) or "-",
            mlflow_run=version.run_id[:8],
        )
        if not passed:
            raise GateFailedError(
                [*evaluated.failures, f"registered as {name} v{version.version} (rejected; no alias moved)"],
                evaluated.metrics,
            )
        onnx_path = registry.local_artifact(version, exported.onnx_path.name)
        return state.with_(
            register=RegisterOutput(
                version.name,
                version.version,
                version.run_id,
                version.source,
                onnx_path,
                lifecycle,
                aliases,
                registry.local_artifact(version, "model_card.html"),
            )
        )


def _log_mlflow_model(
    ctx: RunContext, state: PipelineState, tracker: Any, version: str, onnx_digest: str
) -> dict[str, str]:
    """Log the version's MLflow files (``raymlops.registry.mlflow_model``) into its model folder; their
    digests. They hold no data and stay plaintext: a job that encrypts, or has a personal-data input
    column (``data.columns.<c>.pii``), writes no input example (its rows would be plaintext data)."""
    import tempfile

    from raymlops.registry.mlflow_model import example_rows, write_mlflow_model

    exported, features = state.require("export"), state.require("features")
    pii = any(tags.pii for c, tags in ctx.cfg.data.columns.items() if c in exported.input_columns)
    plain = active_keyring() is None and not pii
    rows = example_rows(features.raw_sample.to_pylist(), exported.input_columns) if plain else []
    with tempfile.TemporaryDirectory() as folder:
        files = write_mlflow_model(
            Path(folder) / "mlflow",
            name=str(ctx.cfg.registry.model_name),
            version=version,
            input_columns=exported.input_columns,
            task=features.task.describe(),
            digest=onnx_digest,
            data_version=state.require("ingest").data_version,
            example_rows=rows,
            onnx_file=exported.onnx_path.name,
        )
        tracker.log_artifacts("model", files)
        return {p.name: _digest(p) for p in files}


def _report(path: Path | None) -> dict[str, Any]:
    """The evaluation report (evaluation.json, sealed by now when encryption is on), or {}."""
    import json

    return json.loads(read_maybe_encrypted(path)) if path is not None and path.exists() else {}


def _digest(path: Path) -> str:
    return digest_bytes(read_maybe_encrypted(path))


def _seal(path: Path) -> None:
    """Encrypt ``path`` in place when the job encrypts (``security.encryption``) and it is plaintext."""
    keyring = active_keyring()
    if keyring is None:
        return
    data = path.read_bytes()
    if not is_encrypted(data):
        write_encrypted(path, data, keyring)


def _write_card(ctx: RunContext, state: PipelineState, version: str, tags: dict[str, str], out: Path) -> None:
    from omegaconf import OmegaConf

    from raymlops.evaluation.model_card import ModelCard, write_model_card

    features, evaluated = state.require("features"), state.require("evaluate")
    task, report = features.task, _report(evaluated.report_path)
    pre = features.preprocessor
    validation, explained = state.validate, state.explain
    first, last = features.train_time_range or ("", "")
    model_cfg: Any = OmegaConf.to_container(ctx.cfg.model, resolve=True)
    card = ModelCard(
        model_name=ctx.cfg.registry.model_name,
        version=version,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        intended_use=str(ctx.cfg.registry.intended_use),
        limitations=list(ctx.cfg.registry.limitations),
        training_data={
            "data_version": state.require("ingest").data_version,
            "rows": dict(features.split_rows),
            "time_range": {"start": first, "end": last} if first else None,
            "schema": {f.name: str(f.type) for f in state.require("ingest").schema},
        },
        preprocessing={
            **{
                f"{c} (numeric)": f"mean {m:.4g}, std {s:.4g}"
                for c, m, s in zip(pre.numeric, pre.means, pre.stds, strict=True)
            },
            **{
                f"{c} (one-hot)": f"{len(v)} categories"
                for c, v in zip(pre.categorical, pre.categories, strict=True)
            },
            "label": f"{task.name}: {features.task_reason or ctx.cfg.features.label.column}",
        },
        model={
            "family": type(state.require("train").model).__name__,
            "hyperparameters": {k: v for k, v in model_cfg.items() if k != "_target_"},
        },
        metrics=dict(evaluated.metrics),
        baseline=dict(evaluated.baseline),
        slices=dict(evaluated.slices),
        gates=[g.to_dict() for g in evaluated.gates],
        champion=evaluated.champion,
        shap=explained.summary if explained else None,
        shap_png=read_maybe_encrypted(explained.plot_png) if explained else None,
        validation={
            "passed": validation.passed,
            "failures": list(validation.failures),
            "warnings": list(validation.warnings),
        }
        if validation
        else None,
        lineage={
            k.removeprefix(TAG_PREFIX): v
            for k, v in tags.items()
            if k not in (INPUT_COLUMNS_TAG, FEATURE_LOOKUP_TAG, TASK_TAG)  # the task has its own section
        },
        task={**task.describe(), "why": features.task_reason or "features.task"},
        directions={m: "higher" if up else "lower" for m, up in task.directions.items()},
        picture=report.get("picture"),  # the evaluate stage drew it from the test predictions
    )
    write_model_card(card, out)
