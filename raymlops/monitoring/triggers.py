"""Retraining triggers: should the model be retrained now, and which numbers say so?

Four triggers, each switched on in the ``retrain`` config group and judged against the version holding
``retrain.alias`` (the champion):

- ``new_data``: ``data.ref`` resolves to a newer version than the champion's ``raymlops.data_version``
  tag (Delta: a higher version number; lakeFS / files: a different commit or digest). A version a retrain
  already started on (its ``retrain-started`` audit record) does not fire again: a rejected candidate is
  not retrained on the same rows forever.
- ``drift``: the monitor (:func:`~raymlops.monitoring.monitor.run_monitor`) reports feature or
  prediction drift for the champion in the window.
- ``accuracy_drop``: the monitor reports a live metric (from feedback) worse than the champion's test
  metric: accuracy or AUC by more than ``monitor.max_accuracy_drop`` / ``max_auc_drop``, or the task's
  primary metric (multiclass macro-F1, regression RMSE; its direction from the task) by more than
  ``monitor.max_metric_drop`` of its test value.
- ``schedule``: a cron fire time (``retrain.schedule``, UTC) passed since the last retrain started (or,
  before any, since the champion was registered).

:func:`evaluate_triggers` returns one :class:`TriggerDecision` per enabled trigger, fired or not, each
with the reason and the figures behind it, so a skipped retrain is as explainable as a started one. The
decision functions are pure (``*_decision``) and unit tested; ``evaluate_triggers`` gathers their inputs
from the registry, the data backend and the prediction log.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from raymlops.errors import ConfigError, RayMLOpsError
from raymlops.registry.tags import DATA_VERSION_TAG

__all__ = [
    "ACCURACY_KINDS",
    "DRIFT_KINDS",
    "RETRAIN_STARTED",
    "TriggerDecision",
    "audit_history",
    "audit_time",
    "evaluate_triggers",
    "fired",
    "last_retrain",
    "monitor_decisions",
    "new_data_decision",
    "schedule_decision",
]

logger = logging.getLogger(__name__)

DRIFT_KINDS = ("feature_drift", "prediction_drift")
ACCURACY_KINDS = ("accuracy_drop", "auc_drop", "metric_drop")
RETRAIN_STARTED = "retrain-started"  # the audit action a retrain writes before it trains


@dataclass(frozen=True)
class TriggerDecision:
    """One trigger's verdict: ``fired``, why, and the numbers that decided it."""

    trigger: str  # new_data | drift | accuracy_drop | schedule | force
    fired: bool
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"{self.trigger}: {'FIRED' if self.fired else 'no'} - {self.reason}"


def fired(decisions: Iterable[TriggerDecision]) -> list[TriggerDecision]:
    return [d for d in decisions if d.fired]


# -- the pure decisions --------------------------------------------------------------------------------


def _newer(latest: str, trained_on: str) -> tuple[bool, str]:
    from raymlops.data.refs import parse_version
    from raymlops.data.versioning import backend_class

    new, old = parse_version(latest, "data.ref"), parse_version(trained_on, DATA_VERSION_TAG)
    if (new.backend, new.location) != (old.backend, old.location):
        return True, f"data.ref is {latest}, the champion was trained on another table ({trained_on})"
    newer = backend_class(new.backend).is_newer(new, old)  # None: the backend's versions carry no order
    if newer is not None:
        if newer:
            return True, f"data version {new.version} > {old.version} the champion was trained on"
        return False, f"data version {new.version} is what the champion was trained on (or older)"
    if new.version != old.version:
        return True, f"data.ref now resolves to {latest}, the champion was trained on {trained_on}"
    return False, f"data.ref resolves to {latest}, the champion's own data version"


def new_data_decision(
    latest: str,
    trained_on: str | None,
    *,
    last_tried: str | None = None,
    rows: tuple[int, int] | None = None,
) -> TriggerDecision:
    """``latest``: what ``data.ref`` resolves to now; ``trained_on``: the champion's data version tag;
    ``last_tried``: the data version the last retrain started on; ``rows``: (champion's, latest) row counts.
    """
    figures: dict[str, Any] = {"latest_data_version": latest, "champion_data_version": trained_on}
    if rows is not None:
        figures.update(champion_rows=rows[0], latest_rows=rows[1], new_rows=rows[1] - rows[0])
    if trained_on is None:
        newer, reason = True, f"no champion has a data version yet; data is {latest}"
    else:
        newer, reason = _newer(latest, trained_on)
    if newer and last_tried == latest:
        figures["last_tried"] = last_tried
        return TriggerDecision(
            "new_data", False, f"{latest} was already retrained on; waiting for newer", figures
        )
    if newer and rows is not None:
        reason += f" (+{rows[1] - rows[0]:,} rows)"
    return TriggerDecision("new_data", newer, reason, figures)


def _version_entry(report: Any, version: str | None) -> dict[str, Any]:
    if version is None:
        return {}
    return dict(report.versions.get(version) or {})


def _drift_figures(entry: dict[str, Any]) -> dict[str, Any]:
    drift, prediction = entry.get("feature_drift") or {}, entry.get("prediction_drift") or {}
    features = drift.get("features") or {}
    psis = {name: f.get("psi") for name, f in features.items() if f.get("psi") is not None}
    worst = max(psis, key=lambda n: psis[n]) if psis else None
    return {
        "rows": sum((entry.get("rows") or {}).values()),
        "drifted_features": {
            name: {k: features[name].get(k) for k in ("psi", "ks")}
            for name in drift.get("drifted_features", [])
        },
        "max_feature_psi": {"feature": worst, "psi": psis[worst]} if worst else None,
        "prediction_psi": prediction.get("psi"),
        "judged": bool(drift.get("judged")),
    }


def _accuracy_figures(entry: dict[str, Any]) -> dict[str, Any]:
    accuracy = entry.get("accuracy") or {}
    return {
        "labelled_rows": accuracy.get("rows", 0),
        "live": accuracy.get("live") or {},
        "test": accuracy.get("test") or {},
        "drop": accuracy.get("drop") or {},
        "judged": bool(accuracy.get("judged")),
    }


def monitor_decisions(
    report: Any, version: str | None, *, on_drift: bool = True, on_accuracy_drop: bool = True
) -> list[TriggerDecision]:
    """The drift and accuracy-drop decisions for ``version`` from a :class:`MonitorReport`'s alerts."""
    entry = _version_entry(report, version)
    alerts = [a for a in report.alerts if a.get("version") == version]
    window = f"[{report.since}, {report.until})"
    out = []
    for enabled, name, kinds, figures in (
        (on_drift, "drift", DRIFT_KINDS, _drift_figures(entry)),
        (on_accuracy_drop, "accuracy_drop", ACCURACY_KINDS, _accuracy_figures(entry)),
    ):
        if not enabled:
            continue
        figures = {"version": version, "window": window, **figures}
        found = [a for a in alerts if a.get("kind") in kinds]
        if found:
            reason = "; ".join(f"{a['kind']}: {a['detail']}" for a in found)
            out.append(TriggerDecision(name, True, f"v{version} {reason}", figures))
        elif not sum((entry.get("rows") or {}).values()):
            out.append(TriggerDecision(name, False, f"no traffic of v{version} in {window}", figures))
        else:
            out.append(TriggerDecision(name, False, _quiet_reason(name, version, entry, figures), figures))
    return out


def _quiet_reason(name: str, version: str | None, entry: dict[str, Any], figures: dict[str, Any]) -> str:
    if name == "drift":
        worst = figures.get("max_feature_psi")
        psi = figures.get("prediction_psi")
        parts = [f"max feature psi {worst['psi']:.3f} ({worst['feature']})" if worst else "no feature psi"]
        parts.append(f"prediction psi {psi:.3f}" if psi is not None else "no prediction psi")
        judged = "" if figures["judged"] else f" (not judged: {figures['rows']} rows)"
        return f"v{version} within thresholds: {', '.join(parts)}{judged}"
    from raymlops.monitoring.report import shown_metric

    metric = shown_metric(entry.get("accuracy") or {})
    live, test = figures["live"].get(metric), figures["test"].get(metric)
    if live is None:
        return f"v{version}: no feedback joined in the window"
    versus = f" vs test {test:.3f}" if test is not None else ""
    judged = "" if figures["judged"] else " (not judged: too few labelled rows)"
    return (
        f"v{version} live {metric} {live:.3f}{versus} on {figures['labelled_rows']:,} labelled rows{judged}"
    )


def schedule_decision(expression: str, reference: dt.datetime | None, now: dt.datetime) -> TriggerDecision:
    """Fired when a fire time of ``expression`` lies in ``(reference, now]``; ``reference`` None: never
    retrained nor registered, so the schedule is due."""
    from raymlops.monitoring.cron import parse_cron

    cron = parse_cron(expression)
    figures: dict[str, Any] = {
        "schedule": cron.expression,
        "since": reference.isoformat() if reference else None,
        "now": now.isoformat(),
    }
    if reference is None:
        return TriggerDecision("schedule", True, f"{cron.expression}: no retrain or champion yet", figures)
    due = cron.due(reference, now)
    if due is not None:
        figures["due"] = due.isoformat()
        return TriggerDecision(
            "schedule",
            True,
            f"{cron.expression}: due at {due:%Y-%m-%d %H:%M} UTC since the last retrain",
            figures,
        )
    upcoming = cron.next_after(reference)
    figures["next"] = upcoming.isoformat()
    return TriggerDecision(
        "schedule", False, f"{cron.expression}: next at {upcoming:%Y-%m-%d %H:%M} UTC", figures
    )


# -- gathering the inputs ------------------------------------------------------------------------------


def audit_history(governance: Any, model: str) -> list[Any]:
    """The model's audit records, oldest first; none for a model not registered yet."""
    from raymlops.errors import ModelNotFoundError

    try:
        return list(governance.history(model))
    except ModelNotFoundError:
        return []


def last_retrain(history: Sequence[Any]) -> Any:  # -> AuditRecord | None
    """The latest ``retrain-started`` audit record, or None."""
    started = [r for r in history if r.action == RETRAIN_STARTED]
    return started[-1] if started else None


def audit_time(text: str) -> dt.datetime:
    """An audit record's ``when`` as an aware datetime."""
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _data_decision(cfg: Any, champion: Any, last: Any) -> TriggerDecision:
    from raymlops.data.refs import open_backend, parse_version

    try:
        backend = open_backend(str(cfg.data.ref), cfg.data.lakefs)
        latest = backend.resolve()
    except ConfigError as exc:
        return TriggerDecision(
            "new_data", False, f"data.ref cannot be resolved: {exc}", {"data_ref": cfg.data.ref}
        )
    trained_on = champion.tags.get(DATA_VERSION_TAG) if champion is not None else None
    rows = None
    if trained_on:
        old = parse_version(trained_on, DATA_VERSION_TAG)
        same = (old.backend, old.location) == (latest.backend, latest.location)
        if same and type(backend).is_newer(latest, old) is not None:  # ordered versions: rows added
            rows = (backend.num_rows(old), backend.num_rows(latest))
    tried = (last.details or {}).get("data_version") if last is not None else None
    return new_data_decision(str(latest), trained_on, last_tried=tried, rows=rows)


def evaluate_triggers(
    cfg: Any,
    *,
    now: dt.datetime | None = None,
    report: Any = None,
    since: dt.datetime | str | None = None,
    until: dt.datetime | str | None = None,
    registry: Any = None,
) -> list[TriggerDecision]:
    """Every enabled trigger of ``cfg.retrain`` judged now; see the module docstring.

    Args:
        cfg: The job config (``retrain``, ``data``, ``registry``, ``monitor`` are read).
        now: The current instant (tests); default: now.
        report: A :class:`MonitorReport` already computed for this window; None: run the monitor on the
            champion when a drift or accuracy trigger is enabled.
        since, until: The monitor window when it runs here (default: ``monitor.window`` up to now).
        registry: A ``ModelRegistry`` to reuse; default: from ``cfg.registry``.
    """
    from raymlops.registry.governance import Governance
    from raymlops.registry.mlflow_registry import ModelRegistry

    r = cfg.retrain
    now = now or dt.datetime.now(dt.UTC)
    if r.schedule is not None:
        from raymlops.monitoring.cron import parse_cron

        parse_cron(str(r.schedule))  # a bad expression fails before anything is read
    registry = registry or ModelRegistry.from_config(cfg.registry)
    model, alias = str(cfg.registry.model_name), str(r.alias)
    champion = registry.by_alias(model, alias)
    history = audit_history(Governance(registry), model)
    last = last_retrain(history)
    decisions: list[TriggerDecision] = []
    if r.on_new_data:
        decisions.append(_data_decision(cfg, champion, last))
    if r.on_drift or r.on_accuracy_drop:
        decisions += _monitor(cfg, champion, alias, report, since, until, r.on_drift, r.on_accuracy_drop)
    if r.schedule is not None:
        reference = audit_time(last.when) if last is not None else _registered_at(registry, champion)
        decisions.append(schedule_decision(str(r.schedule), reference, now))
    for decision in decisions:
        logger.info("trigger %s", decision.line())
    return decisions


def _registered_at(registry: Any, champion: Any) -> dt.datetime | None:
    if champion is None:
        return None
    version = registry.client.get_model_version(champion.name, champion.version)
    return dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.UTC)


def _monitor(
    cfg: Any,
    champion: Any,
    alias: str,
    report: Any,
    since: Any,
    until: Any,
    on_drift: bool,
    on_accuracy_drop: bool,
) -> list[TriggerDecision]:
    names = [n for n, on in (("drift", on_drift), ("accuracy_drop", on_accuracy_drop)) if on]
    if champion is None:
        return [TriggerDecision(n, False, f"no {alias} version to monitor") for n in names]
    if report is None:
        from raymlops.monitoring.monitor import run_monitor

        try:
            report = run_monitor(
                cfg, model=str(cfg.registry.model_name), alias_or_version=alias, since=since, until=until
            )
        except RayMLOpsError as exc:
            return [TriggerDecision(n, False, f"monitor failed: {exc}") for n in names]
    return monitor_decisions(report, champion.version, on_drift=on_drift, on_accuracy_drop=on_accuracy_drop)
