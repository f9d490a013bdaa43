"""Alerts that act: an Alertmanager webhook notification mapped to an action per ``alerts.rules``.

Alertmanager posts a group of alerts (webhook payload version 4: ``status``, ``alerts[]`` with
``labels``, ``annotations``, ``startsAt``, ``fingerprint``); each alert is handled on its own:

- firing, matched by a rule (``alertname`` and optional label ``matchers``): the rule's action —
  ``retrain`` (a ``raymlops retrain`` job through Ray's job submission API), ``rollback`` (the live app
  back to the previous champion, :func:`raymlops.serving.rollback.rollback_live`) or ``record``;
  matched by none: ``alerts.default_action``;
- resolved: recorded only;
- an ``env`` label other than ``env.name`` (or none): refused. An alert must say which env it is about,
  or one Alertmanager serving several envs could roll back the wrong one; Prometheus adds the label
  with ``global.external_labels: {env: prod}``.

Every outcome is a record in the security audit log (``security.audit_log``, hash-chained), action
``alert.<action>``, with the alert that caused it (name, fingerprint, startsAt, status, labels).
Alertmanager re-sends a firing alert every ``repeat_interval`` and retries failed notifications: an alert
already handled (same fingerprint, startsAt and status, found in the audit log) is answered, not acted
on again. The HTTP side is :mod:`raymlops.monitoring.alert_receiver`.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from raymlops.errors import RayMLOpsError, RequestError

__all__ = [
    "ACTIONS",
    "Alert",
    "AlertActions",
    "AlertOutcome",
    "AlertRule",
    "parse_webhook",
    "retrain_job",
]

logger = logging.getLogger(__name__)

ACTIONS = ("record", "retrain", "rollback")
# HTTP status of a notification, by its worst outcome (see AlertActions.handle).
STATUS = {"transient": 503, "refused": 403, "failed": 422, "ok": 200}


@dataclass(frozen=True)
class Alert:
    """One alert of a webhook notification."""

    name: str  # labels.alertname
    status: str  # firing | resolved
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str  # as Alertmanager sent it (RFC 3339)
    fingerprint: str

    @property
    def key(self) -> str:
        """What makes a retry the same notification: Alertmanager's fingerprint, startsAt and status."""
        return f"{self.fingerprint}/{self.starts_at}/{self.status}"

    def details(self) -> dict[str, Any]:
        """The alert as an audit record names it."""
        return {
            "alertname": self.name,
            "fingerprint": self.fingerprint,
            "starts_at": self.starts_at,
            "status": self.status,
            "labels": dict(self.labels),
            "summary": self.annotations.get("summary", ""),
            "alert_key": self.key,
        }


def _strings(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RequestError(f"{where} must be an object of strings, got {value!r:.80}", status=400)
    return dict(value)


def parse_webhook(payload: Any) -> list[Alert]:
    """The alerts of an Alertmanager webhook payload (version 4).

    Raises:
        RequestError: status 400, naming the field that is missing or of the wrong type.
    """
    if not isinstance(payload, Mapping):
        raise RequestError("the body must be a JSON object (Alertmanager's webhook payload)", status=400)
    if str(payload.get("version", "4")) != "4":
        raise RequestError(
            f"webhook payload version {payload.get('version')!r}: only '4' is read", status=400
        )
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise RequestError("'alerts' must be a list (Alertmanager's webhook payload, version 4)", status=400)
    parsed = []
    for number, item in enumerate(alerts):
        where = f"alerts[{number}]"
        if not isinstance(item, Mapping):
            raise RequestError(f"{where} must be an object", status=400)
        labels = _strings(item.get("labels"), f"{where}.labels")
        annotations = _strings(item.get("annotations") or {}, f"{where}.annotations")
        status = item.get("status")
        if status not in ("firing", "resolved"):
            raise RequestError(f"{where}.status is {status!r}: 'firing' or 'resolved'", status=400)
        for name in ("fingerprint", "startsAt"):
            if not isinstance(item.get(name), str) or not item[name]:
                raise RequestError(f"{where}.{name} is missing or not a string", status=400)
        if not labels.get("alertname"):
            raise RequestError(f"{where}.labels has no alertname", status=400)
        parsed.append(
            Alert(labels["alertname"], status, labels, annotations, item["startsAt"], item["fingerprint"])
        )
    return parsed


@dataclass(frozen=True)
class AlertRule:
    """``alerts.rules[]``: alerts named ``alertname`` whose labels equal ``matchers`` get ``action``."""

    alertname: str
    action: str = "record"
    matchers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from raymlops.errors import ConfigError, did_you_mean

        if self.action not in ACTIONS:
            key = f"alerts.rules[{self.alertname}].action"
            raise ConfigError(key, f"{self.action!r} is no action.{did_you_mean(self.action, ACTIONS)}")

    def matches(self, alert: Alert) -> bool:
        return alert.name == self.alertname and all(
            alert.labels.get(k) == v for k, v in self.matchers.items()
        )


@dataclass(frozen=True)
class AlertOutcome:
    """What was done for one alert: ``result`` is ok | refused | failed | transient | duplicate."""

    alert: str
    fingerprint: str
    action: str
    result: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


class ActionRefused(RayMLOpsError):
    """An action that must not run for this alert (another version than the champion, ...)."""


def retrain_job(overrides: Sequence[str], alert: Alert, settings: Mapping[str, Any], state_dir: str) -> dict:
    """The keyword arguments of ``JobSubmissionClient.submit_job`` for a retrain caused by ``alert``.

    The entrypoint is ``python -m raymlops retrain`` with the receiver's overrides (its env, state_dir,
    ...); ``submission_id`` comes from the alert's fingerprint and startsAt, so Ray itself refuses a
    second job for a re-sent alert.
    """
    force = ["--force"] if settings.get("force") else []
    words = ["python", "-m", "raymlops", "retrain", *force, *overrides]
    stamp = re.sub(r"[^0-9A-Za-z]", "", alert.starts_at)
    runtime_env: dict[str, Any] = {"env_vars": {"RAYMLOPS_HOME": state_dir, "RAYMLOPS_PROGRESS": "0"}}
    if settings.get("working_dir"):
        runtime_env["working_dir"] = str(settings["working_dir"])
    return {
        "entrypoint": " ".join(shlex.quote(w) for w in words),
        "submission_id": f"raymlops-alert-{alert.fingerprint}-{stamp}",
        "runtime_env": runtime_env,
        "metadata": {"alertname": alert.name, "fingerprint": alert.fingerprint, "starts_at": alert.starts_at},
    }


class AlertActions:
    """Maps alerts to actions for one env (``cfg``: the composed job config the receiver runs with).

    ``executors`` replaces an action's function (``fn(alert, cfg) -> details``), e.g. to add one of your
    own; the built-in ones are ``retrain``, ``rollback`` and ``record``.
    """

    def __init__(
        self,
        cfg: Any,
        overrides: Sequence[str] = (),
        *,
        principal: Any = None,  # raymlops.security.roles.Principal the receiver acts as
        executors: Mapping[str, Callable[[Alert, Any], dict[str, Any]]] | None = None,
    ) -> None:
        alerts = cfg.alerts
        self.cfg, self.overrides, self.principal = cfg, list(overrides), principal
        self.env = str(cfg.env.name)
        self.audit_log = str(cfg.security.audit_log)
        self.rules = [
            AlertRule(str(r.alertname), str(getattr(r.action, "value", r.action)), dict(r.matchers or {}))
            for r in alerts.rules
        ]
        self.default_action = str(getattr(alerts.default_action, "value", alerts.default_action))
        AlertRule("default_action", self.default_action)  # validates it
        self.executors: dict[str, Callable[[Alert, Any], dict[str, Any]]] = {
            "record": lambda alert, cfg: {},
            "retrain": self._retrain,
            "rollback": self._rollback,
            **(executors or {}),
        }
        self._lock = threading.Lock()  # one alert acted on at a time: two rollbacks must not interleave
        self._handled = self._already_handled()

    # -------------------------------------------------------------- what to do

    def action_for(self, alert: Alert) -> str:
        if alert.status == "resolved":
            return "record"
        return next((r.action for r in self.rules if r.matches(alert)), self.default_action)

    def handle(self, alerts: Sequence[Alert]) -> tuple[int, list[AlertOutcome]]:
        """Act on each alert; the HTTP status for Alertmanager and each alert's outcome.

        200 every alert handled (or handled before); 403 one was refused (its ``env`` label is not this
        env's, or a rollback for a version that is not the champion); 422 an action failed in a way a retry
        will not fix (no previous champion, ...); 503 an action failed unexpectedly (Ray unreachable, ...):
        not marked handled, so Alertmanager's retry runs it again. Alertmanager does not retry a 4xx at
        once, but sends the group again at its next group_interval: it is answered the same, not audited.
        """
        outcomes = [self._handle_one(alert) for alert in alerts]
        worst = next((s for s in STATUS if any(o.result == s for o in outcomes)), "ok")
        return STATUS[worst], outcomes

    def _handle_one(self, alert: Alert) -> AlertOutcome:
        action = self.action_for(alert)
        with self._lock:
            if alert.key in self._handled:
                # Alertmanager re-sends what it could not deliver (a 4xx too) every group_interval, and
                # a firing alert every repeat_interval: answered as the first time, not acted on or
                # audited again.
                first = self._handled[alert.key]
                result = "duplicate" if first == "ok" else first
                return AlertOutcome(
                    alert.name, alert.fingerprint, action, result, f"already handled: {first}"
                )
            env = alert.labels.get("env")
            if env != self.env:
                why = (
                    f"the alert's env label is {env!r}, this receiver acts for env={self.env}"
                    if env
                    else f"the alert has no env label (add global.external_labels: {{env: {self.env}}} "
                    "to prometheus.yml); this receiver acts only on its own env's alerts"
                )
                return self._done(alert, action, "refused", why, why, {"env_refused": True})
            summary = alert.annotations.get("summary")
            why = f"alert {alert.name} {alert.status}" + (f": {summary}" if summary else "")
            try:
                details = self.executors[action](alert, self.cfg)
            except ActionRefused as exc:
                return self._done(alert, action, "refused", str(exc), f"{why}; {exc}", {})
            except RayMLOpsError as exc:  # a deliberate "no" of the system: a retry gets the same answer
                return self._done(alert, action, "failed", str(exc), f"{why}; {exc}", {})
            except Exception as exc:  # Ray, Serve or the job server unreachable: let Alertmanager retry
                logger.exception("alert action failed alert=%s action=%s", alert.name, action)
                message = f"{type(exc).__name__}: {exc}"
                self._audit(alert, action, "error", f"{why}; {message}", {"transient": True})
                return AlertOutcome(alert.name, alert.fingerprint, action, "transient", message)
            logger.info("alert handled alert=%s status=%s action=%s", alert.name, alert.status, action)
            return self._done(alert, action, "ok", why, why, details)

    def _done(
        self, alert: Alert, action: str, result: str, message: str, why: str, details: Mapping[str, Any]
    ) -> AlertOutcome:
        """Audit a final outcome (ok | refused | failed) and remember it for retries."""
        self._audit(alert, action, {"ok": "ok", "refused": "refused"}.get(result, "error"), why, details)
        self._handled[alert.key] = result
        return AlertOutcome(alert.name, alert.fingerprint, action, result, message, dict(details))

    # -------------------------------------------------------------- the audit log

    def _audit(self, alert: Alert, action: str, outcome: str, why: str, details: Mapping[str, Any]) -> None:
        from raymlops.security.audit import audit_event

        who = self.principal.name if self.principal is not None else None
        role = self.principal.role if self.principal is not None else ""
        target = f"{alert.labels.get('model', self.cfg.registry.model_name)} (env={self.env})"
        audit_event(
            f"alert.{action}", target, outcome, why, who=who, role=role,
            details={**alert.details(), **details}, path=self.audit_log,
        )  # fmt: skip

    def _already_handled(self) -> dict[str, str]:
        """alert key -> result, for the alerts this audit log says were handled (a restarted receiver
        does not act twice); a transient error is not handled: its retry acts."""
        from raymlops.security.audit import read_audit

        results = {"ok": "ok", "refused": "refused", "error": "failed"}
        return {
            str(r.details["alert_key"]): results[r.outcome]
            for r in read_audit(self.audit_log)
            if r.action.startswith("alert.")
            and "alert_key" in r.details
            and r.outcome in results
            and not r.details.get("transient")
        }

    # -------------------------------------------------------------- the actions

    def _authorize(self, action: str, target: str, alert: Alert) -> None:
        from raymlops.security.roles import authorize

        authorize(
            self.cfg.security, action, target, principal=self.principal, why=f"alert {alert.name} {alert.key}"
        )

    def _model(self, alert: Alert) -> str:
        return alert.labels.get("model") or str(self.cfg.registry.model_name)

    def _rollback(self, alert: Alert, cfg: Any) -> dict[str, Any]:
        from raymlops.pipeline.ray_session import connect_ray
        from raymlops.registry.governance import Governance
        from raymlops.serving.rollback import rollback_live

        model = self._model(alert)
        governance = Governance.from_config(cfg)
        champion = governance.aliases(model).get("champion")
        version = alert.labels.get("version")
        if version is not None and version != champion:
            # An alert about a version that is no longer champion (a rollback already ran, or a
            # candidate at a small share): rolling the champion back would punish the wrong version.
            raise ActionRefused(f"the alert is about {model} v{version}, the champion is v{champion}")
        self._authorize("serve.rollback", model, alert)
        connect_ray(cfg.ray)  # the cluster serving the app (ray.address); a no-op once connected
        done = rollback_live(cfg, model, f"alert {alert.name} ({alert.fingerprint})", governance=governance)
        return {"from_version": done.from_version, "to_version": done.to_version, "app": done.app}

    def _retrain(self, alert: Alert, cfg: Any) -> dict[str, Any]:
        from omegaconf import OmegaConf

        settings = cast(dict, OmegaConf.to_container(cfg.alerts.retrain, resolve=True))
        job = retrain_job(self.overrides, alert, settings, str(cfg.state_dir))
        self._authorize("retrain.run", self._model(alert), alert)
        job_id = submit_job(str(settings["address"]), job)
        return {"job_id": job_id, "address": settings["address"], "entrypoint": job["entrypoint"]}


def submit_job(address: str, job: Mapping[str, Any]) -> str:
    """Submit ``job`` (``retrain_job``'s arguments) to the Ray job server at ``address``; its id.

    A submission id that exists already is the same alert's job (a re-sent notification): its id.
    """
    import os
    from pathlib import Path

    if not os.environ.get("RAY_AUTH_MODE"):  # Ray 2.60's token auth: send the token when one is at hand
        token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
        if os.environ.get("RAY_AUTH_TOKEN") or token_file.exists():
            os.environ["RAY_AUTH_MODE"] = "token"
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address if "://" in address else f"http://{address}")
    try:
        return str(client.submit_job(**job))
    except RuntimeError as exc:
        if "already exists" in str(exc):
            logger.info("retrain job exists already submission_id=%s", job["submission_id"])
            return str(job["submission_id"])
        raise
