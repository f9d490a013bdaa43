"""One retraining decision, carried out and audited: triggers -> pipeline -> gates -> progressive rollout.

:func:`run_retrain` is what ``jobs/retrain.py``, ``jobs/scheduler.py`` (through that job) and the
``flights_loop`` demo run. It checks the triggers (:func:`~raymlops.monitoring.triggers.evaluate_triggers`);
when none fired (or the last retrain started less than ``retrain.cooldown_s`` ago) it writes a
``retrain-skipped`` audit record with every trigger's reason and numbers and stops. Otherwise it writes one
``retrain-trigger`` record per fired trigger and a ``retrain-started`` record, then runs the job's own
pipeline (:func:`~raymlops.pipeline.runner.run_pipeline`) on what ``data.ref`` resolves to now, with

- ``registry.parent_version`` = the champion (lineage of the new version),
- ``serve.strategy=rollout``: the evaluate stage re-scores the champion on the candidate's test rows
  (``evaluate.champion``), and when the router application already serves the model on the connected
  Ray, a passing candidate joins it as ``challenger`` and is stepped up by the progressive rollout, which
  promotes it or rolls it back on live error rate, latency or prediction shift.

When no application serves the model on this Ray (an embedded ``python jobs/retrain.py`` has its own,
empty Ray), there is nothing to roll out against: the candidate is gated and registered with the alias
``registry.on_pass`` gives (dev: champion; staging/prod: challenger) and nothing is deployed here.

Its gate result (``retrain-gate``: metrics, champion's metrics, each gate) and how it ended are audit
records too (``retrain-rollout``: promoted / rolled_back / registered, with the rollout's own figures;
``retrain-rejected``: a gate failed; ``retrain-failed``: an error or an interruption), so
``python -m raymlops models history <model>`` tells the whole story.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raymlops.errors import RayMLOpsError
from raymlops.monitoring.triggers import (
    RETRAIN_STARTED,
    TriggerDecision,
    evaluate_triggers,
    fired,
    last_retrain,
)
from raymlops.registry.tags import RUN_ID_TAG

__all__ = ["RetrainOutcome", "cooldown_reason", "retrain_config", "run_retrain"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    """What one :func:`run_retrain` did. ``status``: skipped | promoted | rolled_back | registered |
    rejected | failed. ``released``: a new version now serves (promoted) or holds the alias it was
    configured to get (registered)."""

    status: str
    reason: str
    decisions: tuple[TriggerDecision, ...] = ()
    version: str | None = None  # the candidate registered by the retrain
    champion_before: str | None = None
    champion_after: str | None = None
    run_id: str | None = None
    data_version: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    feedback_version: str | None = None  # the feedback table's version it learnt from (include_feedback)

    @property
    def released(self) -> bool:
        return self.status in ("promoted", "registered")


class _Auditor:
    """The retrain's audit records. A model's log lives on the registered model, so before its first
    version exists (the first retrain) records wait here and are written, with their own times, as soon
    as it does."""

    def __init__(self, governance: Any, model: str, run_id: str | None = None) -> None:
        self.governance, self.model, self.run_id = governance, model, run_id
        self.pending: list[Any] = []  # AuditRecord

    def __call__(
        self, action: str, why: str, details: Mapping[str, Any], when: float | None = None, **fields: Any
    ) -> None:
        """``when``: unix time of the decision when it was made before this call (default: now)."""
        from raymlops.registry.governance import AuditRecord
        from raymlops.security.audit import current_user

        logger.info("audit %s %s: %s", action, self.model, why)
        at = dt.datetime.fromtimestamp(when, dt.UTC) if when is not None else dt.datetime.now(dt.UTC)
        self.pending.append(
            AuditRecord(
                when=at.isoformat(timespec="milliseconds"),
                who=current_user(),
                action=action,
                model=self.model,
                why=why,
                run_id=self.run_id or "",
                details=json.loads(json.dumps(dict(details), default=str)),
                **fields,
            )
        )
        if _registered(self.governance.registry, self.model):
            for record in self.pending:
                self.governance.record(record)
            self.pending.clear()


def _registered(registry: Any, model: str) -> bool:
    from raymlops.errors import ModelNotFoundError

    try:
        registry.versions(model)
    except ModelNotFoundError:
        return False
    return True


def _say(progress: Callable[[str], None] | None, message: str) -> None:
    (progress or logger.info)(message)


def run_retrain(
    cfg: Any,
    *,
    force: bool = False,
    report: Any = None,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    now: dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> RetrainOutcome:
    """Check the triggers and, when one fired (or ``force``), retrain; see the module docstring.

    Args:
        cfg: The composed job config.
        force: Retrain whatever the triggers say (and despite the cooldown).
        report, since, until: Passed to :func:`evaluate_triggers` (a monitor report already made, or the
            monitor window).
        overrides: ``{dotted.key: value}`` applied to the retrain's copy of ``cfg`` (e.g. a moved split).
        progress: Called with one line per step (default: the log).
    """
    from raymlops.registry.governance import Governance
    from raymlops.security.roles import authorize

    model = str(cfg.registry.model_name)
    authorize(cfg.security, "retrain.run", model, why="force" if force else "trigger check")
    governance = Governance.from_config(cfg)
    registry = governance.registry
    audit = _Auditor(governance, model)
    decisions = evaluate_triggers(cfg, now=now, report=report, since=since, until=until, registry=registry)
    if force:
        decisions.insert(0, TriggerDecision("force", True, "retrain forced (--force)"))
    for decision in decisions:
        _say(progress, f"trigger {decision.line()}")
    why = fired(decisions)
    champion = registry.by_alias(model, str(cfg.retrain.alias))
    champion_before = champion.version if champion is not None else None
    everything = {d.trigger: {"reason": d.reason, **d.figures} for d in decisions}
    if not why:
        reason = (
            "no trigger fired: " + "; ".join(d.reason for d in decisions)
            if decisions
            else "no trigger enabled"
        )
        audit("retrain-skipped", reason, {"triggers": everything}, from_version=champion_before)
        _say(progress, f"retrain skipped: {reason}")
        return RetrainOutcome("skipped", reason, tuple(decisions), champion_before=champion_before)
    cooling = cooldown_reason(cfg, governance, model, now)
    if cooling and not force:
        audit("retrain-skipped", cooling, {"triggers": everything}, from_version=champion_before)
        _say(progress, f"retrain skipped: {cooling}")
        return RetrainOutcome("skipped", cooling, tuple(decisions), champion_before=champion_before)
    for decision in why:
        audit(
            "retrain-trigger",
            f"{decision.trigger}: {decision.reason}",
            decision.figures,
            from_version=champion_before,
        )
    return _retrain(cfg, decisions, champion_before, overrides or {}, audit, progress)


def cooldown_reason(cfg: Any, governance: Any, model: str, now: dt.datetime | None = None) -> str | None:
    """Why a retrain may not start yet (the last started less than ``retrain.cooldown_s`` ago), or None."""
    from raymlops.monitoring.triggers import audit_history, audit_time

    last = last_retrain(audit_history(governance, model))
    if last is None or cfg.retrain.cooldown_s <= 0:
        return None
    age = ((now or dt.datetime.now(dt.UTC)) - audit_time(last.when)).total_seconds()
    if age < cfg.retrain.cooldown_s:
        limit = cfg.retrain.cooldown_s
        return f"cooldown: the last retrain started {age:.0f} s ago (retrain.cooldown_s={limit:g})"
    return None


def _app_serves(cfg: Any, model: str) -> bool:
    """Whether the router application of ``serve.app_name`` serves ``model`` on the connected Ray."""
    from raymlops.pipeline.ray_session import connect_ray
    from raymlops.serving.operations import served_versions

    if not cfg.serve.enabled:
        return False
    connect_ray(cfg.ray)
    return bool(served_versions(str(cfg.serve.app_name), model))


def retrain_config(
    cfg: Any,
    champion: str | None,
    live: bool,
    overrides: Mapping[str, Any],
    feedback_version: str | None = None,
) -> Any:
    """The retrain's own copy of the job config (see the module docstring); with ``feedback_version``
    (``retrain.include_feedback`` / ``feedback_only``) it reads that feedback table version too
    (:func:`with_feedback`)."""
    from omegaconf import OmegaConf

    from raymlops.pipeline.stage_registry import stage_class

    rcfg = copy.deepcopy(cfg)
    rcfg.run_name = f"{cfg.run_name}-retrain"
    # Stages that watch or drive models (monitor, the loop demo's) declare in_retrain = False.
    rcfg.stages = [s for s in cfg.stages if stage_class(s).in_retrain]
    rcfg.registry.parent_version = champion
    rcfg.serve.strategy = "rollout"
    if live:
        rcfg.registry.on_pass = "challenger"  # the rollout, not the register stage, moves the champion
    else:
        rcfg.serve.enabled = False
    for key, value in overrides.items():
        OmegaConf.update(rcfg, key, value, merge=False)
    return with_feedback(rcfg, feedback_version) if feedback_version else rcfg


def with_feedback(rcfg: Any, feedback_version: str) -> Any:
    """``rcfg`` reading ``feedback_version`` beside (or instead of) data.ref: the ingest stage becomes
    :class:`~raymlops.loop.feedback_ingest.FeedbackIngestStage`, and the validate rules are narrowed to the
    columns the union holds (:func:`~raymlops.monitoring.feedback_data.feedback_rules`)."""
    from omegaconf import open_dict

    from raymlops.loop.feedback_ingest import FeedbackIngestStage
    from raymlops.monitoring.feedback_data import feedback_rules, training_columns
    from raymlops.pipeline.stage_registry import class_path, stage_name

    rcfg.retrain.feedback_ref = feedback_version  # pinned: the rows the retrain-started record names
    ingest = class_path(FeedbackIngestStage)
    rcfg.stages = [ingest if stage_name(s) == "ingest" else s for s in rcfg.stages]
    rules = feedback_rules(rcfg, training_columns(rcfg))
    validate = rcfg.validate
    with open_dict(validate.columns):  # in place: the structured config refuses plain dicts as rules
        for name in [n for n in validate.columns if n not in rules["columns"]]:
            del validate.columns[name]
    validate.unique.key = list(rules["unique"].get("key") or [])
    validate.freshness.column = rules["freshness"].get("column")
    validate.drift.reference = None
    return rcfg


def _publish_feedback(cfg: Any, progress: Callable[[str], None] | None) -> str | None:
    """Publish the outcomes that arrived since the last publish; the feedback table's version to train on
    (None: no feedback table yet, nothing was ever published)."""
    from raymlops.data.refs import open_backend
    from raymlops.errors import ConfigError
    from raymlops.monitoring.feedback_data import publish_feedback

    published = publish_feedback(cfg)
    _say(progress, published.line())
    try:
        backend = open_backend(str(cfg.retrain.feedback_ref), cfg.data.lakefs, key="retrain.feedback_ref")
        return str(backend.resolve())
    except ConfigError:
        return None


def _retrain(
    cfg: Any,
    decisions: list[TriggerDecision],
    champion: str | None,
    overrides: Mapping[str, Any],
    audit: _Auditor,
    progress: Callable[[str], None] | None,
) -> RetrainOutcome:
    from raymlops.data.refs import open_backend
    from raymlops.errors import ConfigError
    from raymlops.pipeline.context import RunContext
    from raymlops.pipeline.runner import run_pipeline

    model = str(cfg.registry.model_name)
    live = _app_serves(cfg, model)
    feedback_version = None
    if cfg.retrain.include_feedback or cfg.retrain.feedback_only:
        try:
            feedback_version = _publish_feedback(cfg, progress)
            if feedback_version is None and cfg.retrain.feedback_only:
                raise ConfigError(
                    "retrain.feedback_only",
                    f"nothing has been published into {cfg.retrain.feedback_ref} yet: nothing to learn from.",
                )
        except RayMLOpsError as exc:
            why = f"feedback could not be published or read: {type(exc).__name__}: {exc}"
            audit("retrain-failed", why, {"outcome": "failed"}, from_version=champion)
            _say(progress, f"retrain failed: {why}")
            return RetrainOutcome("failed", why, tuple(decisions), champion_before=champion)
    rcfg = retrain_config(cfg, champion, live, overrides, feedback_version)
    ctx = RunContext(rcfg)
    audit.run_id = ctx.run_id
    try:
        data_version = str(open_backend(str(rcfg.data.ref), rcfg.data.lakefs).resolve())
    except ConfigError:  # no table yet: the ingest stage seeds it from data.source
        data_version = f"{rcfg.data.ref} (new: seeded from {rcfg.data.source})"
    if feedback_version and cfg.retrain.feedback_only:
        data_version = feedback_version  # data.ref is not read
    triggers = [d.trigger for d in decisions if d.fired]
    started = {
        "data_version": data_version,
        "feedback_version": feedback_version,
        "champion": champion,
        "triggers": triggers,
        "rollout": live,
        "app": str(cfg.serve.app_name) if live else None,
        "stages": list(rcfg.stages),
        "overrides": dict(overrides),
    }
    audit(
        RETRAIN_STARTED,
        f"triggered by {', '.join(triggers)}; job {ctx.run_id}",
        started,
        from_version=champion,
    )
    plus = f" + feedback {feedback_version}" if feedback_version and data_version != feedback_version else ""
    _say(
        progress,
        f"retrain started: job {ctx.run_id} on {data_version}{plus} (rollout against the live app: {live})",
    )
    began = time.monotonic()
    error: RayMLOpsError | None = None
    try:
        run_pipeline(rcfg, ctx)
    except RayMLOpsError as exc:
        error = exc
    except KeyboardInterrupt:  # Ctrl-C, or the scheduler stopping: say so in the audit log, then stop
        why = f"interrupted after {time.monotonic() - began:.0f} s; nothing was promoted by this job"
        audit("retrain-failed", why, {"outcome": "interrupted"}, from_version=champion)
        raise
    seconds = round(time.monotonic() - began, 1)
    outcome = _conclude(rcfg, ctx, decisions, champion, data_version, error, seconds, audit, progress)
    return dataclasses.replace(outcome, feedback_version=feedback_version)


def _evaluation(ctx: Any) -> dict[str, Any]:
    path = ctx.run_dir / "evaluation.json"
    if not path.exists():
        return {}
    report = json.loads(path.read_text())
    split = report.get("split", "test")
    champion = report.get("champion") or {}
    keys = [f"{split}/{m}" for m in ("auc", "accuracy", "logloss", "rows")]
    return {
        "passed": report.get("passed"),
        "metrics": {k: report["metrics"].get(k) for k in keys if k in report.get("metrics", {})},
        "champion": {
            "version": champion.get("version"),
            **{k: (champion.get("metrics") or {}).get(k) for k in keys},
        }
        if champion
        else None,
        "gates": [
            {"gate": g.get("gate"), "passed": g.get("passed"), "detail": g.get("detail")}
            for g in report["gates"]
        ],
    }


def _candidate(registry: Any, model: str, run_id: str) -> Any:
    if not _registered(registry, model):
        return None
    mine = [v for v in registry.versions(model) if v.tags.get(RUN_ID_TAG) == run_id]
    return mine[-1] if mine else None


def _rollout_record(governance: Any, model: str, version: str) -> Any:
    actions = ("rollout-promote", "rollout-rollback")
    records = [r for r in governance.history(model) if r.action in actions and r.to_version == version]
    return records[-1] if records else None


def _conclude(
    rcfg: Any,
    ctx: Any,
    decisions: list[TriggerDecision],
    champion: str | None,
    data_version: str,
    error: RayMLOpsError | None,
    seconds: float,
    audit: _Auditor,
    progress: Callable[[str], None] | None,
) -> RetrainOutcome:
    from raymlops.errors import GateFailedError

    governance = audit.governance
    registry, model = governance.registry, audit.model
    evaluation = _evaluation(ctx)
    candidate = _candidate(registry, model, ctx.run_id)
    version = candidate.version if candidate is not None else None
    if evaluation:
        verdict = "passed" if evaluation["passed"] else "failed"
        failures = [g["detail"] for g in evaluation["gates"] if not g["passed"]]
        why = f"gates {verdict}" + (f": {'; '.join(failures)}" if failures else "")
        # Written once the run ended; stamped with the time the evaluate stage decided it.
        decided = (ctx.run_dir / "evaluation.json").stat().st_mtime
        audit("retrain-gate", why, evaluation, when=decided, to_version=version)
        _say(progress, f"retrain gate {verdict}: {evaluation['metrics']}")
    figures: dict[str, Any] = {"seconds": seconds, "evaluation": evaluation}
    rolled_back = isinstance(error, GateFailedError) and "rollout rolled back" in str(error)
    if evaluation and not evaluation["passed"]:
        status = "rejected"
        kept = f"v{version} registered as rejected" if version else "nothing registered"
        reason = f"the candidate failed its gates ({kept}); the champion v{champion} stays"
    elif error is not None and not rolled_back:
        status, reason = "failed", f"{type(error).__name__}: {error}"
    elif not rcfg.serve.enabled:
        status = "registered"
        aliases = ",".join(candidate.aliases) if candidate is not None else ""
        reason = f"v{version} registered ({aliases or 'no alias'}); no live app serves {model} on this Ray"
    else:
        record = _rollout_record(governance, model, version) if version else None
        if record is not None:
            figures["rollout"] = {"action": record.action, "why": record.why, **(record.details or {})}
        holder = registry.by_alias(model, str(rcfg.retrain.alias))
        if rolled_back:
            status = "rolled_back"
            why_back = record.why if record is not None else str(error)
            reason = f"v{version} rolled back {why_back}; v{champion} keeps serving"
        elif holder is not None and holder.version == version:
            status, reason = "promoted", f"v{version} rolled out to 100% and is now {rcfg.retrain.alias}"
        else:  # the app stopped before the deploy stage: it deployed the candidate without a rollout
            outcome = ctx.figures.get("deploy", {}).get("outcome")
            status = "registered"
            reason = f"v{version} deployed ({outcome}) without a rollout; {rcfg.retrain.alias} did not move"
    after = registry.by_alias(model, str(rcfg.retrain.alias))
    action = {"failed": "retrain-failed", "rejected": "retrain-rejected"}.get(status, "retrain-rollout")
    audit(action, reason, {"outcome": status, **figures}, from_version=champion, to_version=version)
    _say(progress, f"retrain {status}: {reason}")
    return RetrainOutcome(
        status,
        reason,
        tuple(decisions),
        version=version,
        champion_before=champion,
        champion_after=after.version if after is not None else None,
        run_id=ctx.run_id,
        data_version=data_version,
        figures=figures,
    )
