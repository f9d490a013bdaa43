"""Aliases, lifecycle and the audit log on top of MLflow's model registry.

Aliases: ``champion`` (serves production traffic), ``challenger`` (the next candidate, e.g. in a
rollout), ``shadow`` (mirrored traffic only). Lifecycle, kept in the version tag ``raymlops.lifecycle``:
``candidate`` -> ``staging`` (challenger or shadow) -> ``production`` (champion) -> ``archived``; a
version that failed its gates is ``rejected`` and can never hold an alias.

Every change is an audit record (who, when, what, from, to, why, run id, outcome; refusals and lost
races included) stored as a registered-model tag ``raymlops.audit.<ns>.<id>`` in the registry's own
store, so it travels with the registry (SQLite file or MLflow server) and needs no second database.
Changes happen under the registry lock and compare-and-set: a change that races another fails with
``AliasConflictError`` and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from raymlops.errors import AliasConflictError, ConfigError, GovernanceError
from raymlops.registry.mlflow_registry import ModelRegistry, RegisteredVersion, check_owner
from raymlops.registry.tags import AUDIT_PREFIX, DEPLOYED_TAG, ENV_TAG, LIFECYCLE_TAG
from raymlops.security.audit import current_user

__all__ = [
    "ALIASES",
    "ALIAS_LIFECYCLE",
    "LIFECYCLE",
    "UNCHANGED",
    "AuditRecord",
    "Governance",
]

ALIASES = ("champion", "challenger", "shadow")
LIFECYCLE = ("candidate", "staging", "production", "archived", "rejected")
ALIAS_LIFECYCLE = {"champion": "production", "challenger": "staging", "shadow": "staging"}


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED: Any = _Unchanged()  # ``expected=UNCHANGED``: no compare-and-set


@dataclass(frozen=True)
class AuditRecord:
    """One governance event. ``outcome``: ok | refused | conflict."""

    when: str
    who: str
    action: str  # register | promote | rollback | clear | archive | reject | deploy | undeploy | ...
    model: str
    why: str
    outcome: str = "ok"
    alias: str | None = None
    from_version: str | None = None
    to_version: str | None = None
    run_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> AuditRecord:
        return cls(**json.loads(text))


def _check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise ConfigError("alias", f"{alias!r} is not an alias raymlops manages.", ALIASES)


class Governance:
    """Alias moves, lifecycle changes and their audit trail for the models of one registry.

    With ``env`` set (the job's and CLI's ``env.name``), every change to a model owned by another env
    is refused and audited as such (``check_owner``).
    """

    def __init__(self, registry: ModelRegistry, env: str | None = None) -> None:
        self.registry = registry
        self.env = env

    @classmethod
    def from_config(cls, cfg: Any) -> Governance:
        """The governance of the job config's registry, acting as its ``env``."""
        return cls(ModelRegistry.from_config(cfg.registry), env=str(cfg.env.name))

    def check_env(self, name: str, action: str, why: str, **fields: Any) -> None:
        """``check_owner`` for this governance's env; a refusal is written to the model's audit log."""
        if self.env is None:
            return
        owner = self._client.get_registered_model(name).tags.get(ENV_TAG)
        try:
            check_owner(name, owner, self.env)
        except GovernanceError:
            details = {"owner_env": owner, "env": self.env}
            self.audit(action, name, why, outcome="refused", details=details, **fields)
            raise

    @property
    def _client(self) -> Any:
        return self.registry.client

    # ------------------------------------------------------------------------------------ reading

    def aliases(self, name: str) -> dict[str, str]:
        """alias -> version for the aliases currently set on ``name``."""
        model = self._client.get_registered_model(name)
        return {alias: str(version) for alias, version in (model.aliases or {}).items()}

    def history(self, name: str) -> list[AuditRecord]:
        """Every audit record of ``name``, oldest first."""
        self.registry.versions(name)  # ModelNotFoundError with suggestions for an unknown name
        tags = self._client.get_registered_model(name).tags
        keys = sorted(k for k in tags if k.startswith(AUDIT_PREFIX))
        return [AuditRecord.from_json(tags[k]) for k in keys]

    def champion_stack(self, name: str) -> list[str]:
        """The champions in order, replayed from the audit log; a rollback pops the latest."""
        stack: list[str] = []
        for record in self.history(name):
            if record.alias != "champion" or record.outcome != "ok":
                continue
            if record.action == "rollback" and stack:
                stack.pop()
            elif record.action == "clear" and stack:
                stack.clear()
            elif record.to_version is not None and (not stack or stack[-1] != record.to_version):
                stack.append(record.to_version)
        return stack

    # ------------------------------------------------------------------------------------ writing

    def record(self, record: AuditRecord) -> AuditRecord:
        """Append ``record`` to the model's audit log (unique key: time, then a random id)."""
        key = f"{AUDIT_PREFIX}{time.time_ns():020d}.{uuid.uuid4().hex[:8]}"
        self._client.set_registered_model_tag(record.model, key, record.to_json())
        return record

    def audit(self, action: str, name: str, why: str, **fields: Any) -> AuditRecord:
        when = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        who = fields.pop("who", None) or current_user()
        return self.record(AuditRecord(when=when, who=who, action=action, model=name, why=why, **fields))

    def set_lifecycle(self, name: str, version: str, state: str, *, why: str, **audit: Any) -> None:
        if state not in LIFECYCLE:
            raise ConfigError("lifecycle", f"{state!r} is not a lifecycle state.", LIFECYCLE)
        self.check_env(name, "lifecycle", why, to_version=version)
        with self.registry.locked():
            self._client.set_model_version_tag(name, version, LIFECYCLE_TAG, state)
            self.audit(
                state if state in ("archived", "rejected") else "lifecycle",
                name,
                why,
                to_version=version,
                details={"lifecycle": state},
                **audit,
            )

    def set_alias(
        self,
        name: str,
        alias: str,
        version: str,
        *,
        why: str,
        action: str = "promote",
        expected: Any = UNCHANGED,
        run_id: str = "",
        who: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> AuditRecord:
        """Point ``alias`` at ``version`` (compare-and-set against ``expected`` when given).

        Raises:
            GovernanceError: The version is rejected or archived.
            AliasConflictError: ``alias`` was not at ``expected``; nothing changed, the loss is audited.
        """
        _check_alias(alias)
        self.check_env(name, action, why, alias=alias, to_version=version, run_id=run_id, who=who)
        target = self.registry.version(name, version)
        if target.lifecycle in ("rejected", "archived"):
            self.audit(
                action,
                name,
                why,
                outcome="refused",
                alias=alias,
                to_version=version,
                run_id=run_id,
                who=who,
                details={"lifecycle": target.lifecycle},
            )
            raise GovernanceError(
                f"{name} v{version} is {target.lifecycle}: it cannot become {alias!r}. "
                f"Register or pick another version (`python -m raymlops models list`)."
            )
        with self.registry.locked():
            current = self.aliases(name).get(alias)
            if expected is not UNCHANGED and current != expected:
                self.audit(
                    action,
                    name,
                    why,
                    outcome="conflict",
                    alias=alias,
                    from_version=current,
                    to_version=version,
                    run_id=run_id,
                    who=who,
                    details={"expected": expected},
                )
                raise AliasConflictError(name, alias, expected, current)
            self._client.set_registered_model_alias(name, alias, version)
            self._client.set_model_version_tag(name, version, LIFECYCLE_TAG, ALIAS_LIFECYCLE[alias])
            if current is not None and current != version:
                self._demote_if_aliasless(name, current)
            return self.audit(
                action,
                name,
                why,
                alias=alias,
                from_version=current,
                to_version=version,
                run_id=run_id,
                who=who,
                details=details or {},
            )

    def clear_alias(
        self, name: str, alias: str, *, why: str, who: str | None = None, expected: Any = UNCHANGED
    ) -> AuditRecord | None:
        """Remove ``alias``; None when no version held it."""
        _check_alias(alias)
        self.check_env(name, "clear", why, alias=alias, who=who)
        with self.registry.locked():
            current = self.aliases(name).get(alias)
            if expected is not UNCHANGED and current != expected:
                raise AliasConflictError(name, alias, expected, current)
            if current is None:
                return None
            self._client.delete_registered_model_alias(name, alias)
            self._demote_if_aliasless(name, current)
            return self.audit("clear", name, why, alias=alias, from_version=current, who=who)

    def _demote_if_aliasless(self, name: str, version: str) -> None:
        """A version that lost its last alias goes back to ``candidate`` (it may be promoted again)."""
        held = [a for a, v in self.aliases(name).items() if v == version]
        if not held and self.registry.version(name, version).lifecycle in ("staging", "production"):
            self._client.set_model_version_tag(name, version, LIFECYCLE_TAG, "candidate")

    def rollback(self, name: str, *, why: str, who: str | None = None) -> AuditRecord:
        """Restore the champion before the current one (compare-and-set against the current one)."""
        stack = self.champion_stack(name)
        current = self.aliases(name).get("champion")
        if len(stack) < 2 or stack[-1] != current:
            raise GovernanceError(
                f"{name} has no previous champion to roll back to (champion history: "
                f"{' -> '.join(stack) or 'empty'}; current: {current or 'none'}). "
                f"Promote a version instead: `python -m raymlops models promote {name} VERSION`."
            )
        return self.set_alias(
            name, "champion", stack[-2], why=why, action="rollback", expected=current, who=who
        )

    def deployed_apps(self, version: RegisteredVersion) -> list[str]:
        return [a for a in version.tags.get(DEPLOYED_TAG, "").split(",") if a]

    def mark_deployed(self, name: str, version: str, app: str, *, deployed: bool, why: str) -> None:
        """Record that Serve application ``app`` serves (or no longer serves) ``version``."""
        with self.registry.locked():
            apps = set(self.deployed_apps(self.registry.version(name, version)))
            apps = apps | {app} if deployed else apps - {app}
            self._client.set_model_version_tag(name, version, DEPLOYED_TAG, ",".join(sorted(apps)))
            self.audit(
                "deploy" if deployed else "undeploy", name, why, to_version=version, details={"app": app}
            )

    def record_deployment(self, name: str, app: str, versions: set[str], *, why: str) -> None:
        """``app`` now serves exactly ``versions`` of ``name``: tag those, untag the ones it dropped."""
        for found in self.registry.versions(name):
            serving = app in self.deployed_apps(found)
            if (found.version in versions) != serving:
                self.mark_deployed(name, found.version, app, deployed=not serving, why=why)

    def archive(
        self,
        name: str,
        version: str,
        *,
        why: str,
        undeploy: Callable[[str], None] | None = None,
        who: str | None = None,
    ) -> AuditRecord:
        """Decommission ``version``: refused while it is champion, or deployed unless ``undeploy``
        (called once per Serve application still serving it) is given."""
        self.check_env(name, "archive", why, to_version=version, who=who)
        target = self.registry.version(name, version)
        apps = self.deployed_apps(target)
        if "champion" in target.aliases:
            problem = "it is the champion: promote another version (or roll back) first"
        elif apps and undeploy is None:
            problem = f"it is still deployed in {', '.join(apps)}: pass --undeploy to take it down first"
        else:
            problem = ""
        if problem:
            self.audit(
                "archive",
                name,
                why,
                outcome="refused",
                to_version=version,
                who=who,
                details={"problem": problem},
            )
            raise GovernanceError(f"{name} v{version} was not archived: {problem}.")
        for app in apps:
            assert undeploy is not None
            undeploy(app)
            self.mark_deployed(name, version, app, deployed=False, why=f"archive: {why}")
        with self.registry.locked():
            for alias in target.aliases:
                self._client.delete_registered_model_alias(name, alias)
            self._client.set_model_version_tag(name, version, LIFECYCLE_TAG, "archived")
            return self.audit(
                "archive",
                name,
                why,
                to_version=version,
                who=who,
                details={"aliases_removed": list(target.aliases), "undeployed": apps},
            )
