"""One role model for the CLI, the job and serving: who may do what, checked and audited.

Roles are ordered, ``viewer < predictor < data-scientist < operator < admin``; a role may do what
every role below it may. ``ACTIONS`` names every guarded action and the lowest role it needs (the
table in ``docs/security.md`` is this dict). Serving routes map to roles in
``raymlops.serving.protocols.registry.ROUTE_ROLES`` with the same names.

Who acts:
- ``security.enabled=false`` (the embedded default, one person on one machine): the OS user (or
  ``RAYMLOPS_USER``), as ``admin``. Every privileged action is still audited.
- ``security.enabled=true``: the API key in ``$RAYMLOPS_API_KEY``, verified against the same hashed
  key file serving uses (``security.keys_file``); its role is the key's role and its name the key's
  name. No key, or a wrong one, is refused (and audited).

:func:`authorize` checks a role against an action and writes a record to the audit log
(``security.audit_log``) for every refusal and for every allowed action above ``viewer`` (reads are
not audited: they change nothing and would drown the log).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raymlops.errors import AuthError, ConfigError, PermissionDeniedError
from raymlops.security.audit import AUDIT_LOG_ENV, audit_event
from raymlops.security.role_ranks import ROLES, role_allows, role_rank

__all__ = [
    "ACTIONS",
    "API_KEY_ENV",
    "CLI_ACTIONS",
    "ROLES",
    "Principal",
    "authorize",
    "authorize_job",
    "job_actions",
    "needed_role",
    "resolve_principal",
    "role_allows",
]

API_KEY_ENV = "RAYMLOPS_API_KEY"

# action -> (the lowest role that may do it, what it is). Serving's routes use the same role names.
ACTIONS: dict[str, tuple[str, str]] = {
    "models.read": ("viewer", "list models and versions, show a version, its lineage and history"),
    "data.read": ("viewer", "data versions: log, show, diff"),
    "features.read": ("viewer", "feature views: status, show stored rows"),
    "runs.read": ("viewer", "job runs: list, compare"),
    "serve.status": ("viewer", "what an app serves, with live statistics"),
    "deploy.manifests": ("viewer", "generate the KubeRay manifests and the ray up config from config"),
    "predict": ("predictor", "score rows, explain, send feedback (serving routes)"),
    "job.run": ("data-scientist", "run the job's data, training, evaluation and export stages"),
    "models.register": ("data-scientist", "register a candidate version (registry.on_pass=none)"),
    "data.audit": ("data-scientist", "validate and profile a data version, write reports"),
    "data.ingest": ("data-scientist", "write-audit-publish a file into a data reference"),
    "features.materialize": ("data-scientist", "write feature rows into the online store"),
    "monitor.run": ("data-scientist", "compute drift and live accuracy reports"),
    "batch.score": ("data-scientist", "score a dataset with a registered version (jobs/batch_score.py)"),
    "models.promote": ("operator", "point an alias at a version (a job's registry.on_pass alias too)"),
    "models.rollback": ("operator", "restore the previous champion"),
    "models.archive": ("operator", "decommission a version"),
    "serve.deploy": ("operator", "deploy versions to an app (the job's deploy stage, serve run/deploy)"),
    "serve.traffic": ("operator", "change an app's traffic split"),
    "serve.rollout": ("operator", "progressive rollout with automatic rollback"),
    "serve.rollback": ("operator", "the previous champion back with all traffic"),
    "serve.shadow": ("operator", "mirror requests to a version that never answers; stop or promote it"),
    "retrain.run": ("operator", "the closed loop: retrain, gate and roll out (jobs/retrain.py, scheduler)"),
    "alerts.receive": ("operator", "serve the Alertmanager webhook that retrains or rolls back on alerts"),
    "security.audit": ("operator", "read and verify the audit log"),
    "state.backup": ("operator", "archive the embedded state"),
    "keys.manage": ("admin", "create, list and revoke API keys"),
    "roles.manage": ("admin", "change the role of an API key"),
    "security.rotate": ("admin", "rotate the key-encryption key"),
    "data.erase": ("admin", "erase a subject's rows from the prediction log and feedback"),
    "state.restore": ("admin", "restore the embedded state from an archive"),
}

# ``python -m raymlops GROUP COMMAND`` -> action. A command missing here needs admin (default deny):
# ``tests/unit/test_roles.py`` walks the CLI's parser and fails on any command not listed.
CLI_ACTIONS: dict[str, str] = {
    "models list": "models.read",
    "models versions": "models.read",
    "models show": "models.read",
    "models lineage": "models.read",
    "models history": "models.read",
    "models promote": "models.promote",
    "models rollback": "models.rollback",
    "models archive": "models.archive",
    "data log": "data.read",
    "data show": "data.read",
    "data diff": "data.read",
    "data audit": "data.audit",
    "data ingest": "data.ingest",
    "data erase": "data.erase",
    "features status": "features.read",
    "features show": "features.read",
    "features materialize": "features.materialize",
    "runs list": "runs.read",
    "runs compare": "runs.read",
    "serve status": "serve.status",
    "serve run": "serve.deploy",
    "serve deploy": "serve.deploy",
    "serve traffic": "serve.traffic",
    "serve rollout": "serve.rollout",
    "serve rollback": "serve.rollback",
    "serve shadow": "serve.shadow",
    "serve keys add": "keys.manage",
    "serve keys list": "keys.manage",
    "serve keys revoke": "keys.manage",
    "serve keys role": "roles.manage",
    "security audit": "security.audit",
    "security rotate-kek": "security.rotate",
    "state backup": "state.backup",
    "state restore": "state.restore",
    "monitor": "monitor.run",
    "retrain": "retrain.run",
    "feedback publish": "data.ingest",  # write-audit-publish of labelled live rows into retrain.feedback_ref
    "scheduler": "retrain.run",
    "alerts receive": "alerts.receive",
    "batch-score": "batch.score",
    "ci-gate": "job.run",
    "job run": "job.run",
    "job submit": "job.run",
    "deploy manifests": "deploy.manifests",
    "init": "data.read",  # reads a table, writes config files only
}
_UNLISTED_ROLE = "admin"


@dataclass(frozen=True)
class Principal:
    """Who acts: a name (key name or OS user), a role, and the key id when a key was presented."""

    name: str
    role: str
    key_id: str | None = None


def needed_role(action: str) -> str:
    if action not in ACTIONS:
        raise ConfigError("action", f"{action!r} is not a guarded action.", ACTIONS)
    return ACTIONS[action][0]


def _setting(security: Any, name: str, default: Any = None) -> Any:
    if isinstance(security, Mapping):
        return security.get(name, default)
    return getattr(security, name, default)


# A key verified once in this process is remembered by its SHA-256 (PBKDF2 costs ~0.1 s a check).
_VERIFIED: dict[bytes, str] = {}


def resolve_principal(security: Any) -> Principal:
    """Who acts, from ``cfg.security`` (see the module docstring).

    Raises:
        AuthError: Security is on and ``$RAYMLOPS_API_KEY`` is unset, malformed, unknown or revoked.
    """
    from raymlops.security.audit import current_user

    if not _setting(security, "enabled", False):
        return Principal(current_user(), "admin")
    from raymlops.security.keys import KeyStore, parse_key, verify_key

    key = os.environ.get(API_KEY_ENV, "").strip()
    keys_file = str(_setting(security, "keys_file"))
    hint = f"create one with `python -m raymlops serve keys add NAME --role ROLE` (key file {keys_file})"
    if not key:
        _refuse_unknown(security, "no API key", "")
        raise AuthError(f"security.enabled is true: set {API_KEY_ENV} to your API key; {hint}.")
    parsed = parse_key(key)
    records = KeyStore(keys_file).public_table() if parsed else {}
    record = records.get(parsed[0]) if parsed else None
    if parsed is None or record is None:
        what = f"key id {parsed[0]!r} is unknown or revoked" if parsed else "it is not rmk_<key_id>_<secret>"
        _refuse_unknown(security, what, parsed[0] if parsed else "")
        raise AuthError(f"{API_KEY_ENV} is refused: {what}; {hint}.")
    fingerprint = hashlib.sha256(key.encode()).digest()
    cached = _VERIFIED.get(fingerprint)
    if cached is None or not hmac.compare_digest(cached, record["hash"]):
        if not verify_key(key, record["salt"], record["hash"]):
            _refuse_unknown(security, "wrong secret", parsed[0])
            raise AuthError(f"{API_KEY_ENV} is refused: the secret of key id {parsed[0]!r} is wrong; {hint}.")
        _VERIFIED[fingerprint] = record["hash"]
    return Principal(record.get("name") or parsed[0], record["role"], parsed[0])


def _audit_path(security: Any) -> str | None:
    path = _setting(security, "audit_log")
    return str(path) if path else os.environ.get(AUDIT_LOG_ENV)


def _refuse_unknown(security: Any, why: str, key_id: str) -> None:
    details = {"key_id": key_id} if key_id else {}
    who = key_id or "anonymous"
    audit_event("authenticate", "cli", "refused", why, who=who, details=details, path=_audit_path(security))


def authorize(
    security: Any, action: str, target: str = "", *, principal: Principal | None = None, why: str = ""
) -> Principal:
    """Check that the caller may do ``action`` on ``target``; audit the outcome; return the caller.

    With a key, also sets ``RAYMLOPS_USER`` to the key's name, so that governance records (alias moves,
    registrations) made by this process name the same person.

    Raises:
        AuthError: No valid key while security is on (refused and audited).
        PermissionDeniedError: The caller's role is below the action's (refused and audited).
    """
    needed = needed_role(action)
    principal = principal or resolve_principal(security)

    def record(outcome: str, reason: str) -> None:
        details = {"key_id": principal.key_id} if principal.key_id else {}
        audit_event(
            action, target, outcome, reason, who=principal.name, role=principal.role, details=details,
            path=_audit_path(security),
        )  # fmt: skip

    if not role_allows(principal.role, needed):
        reason = f"needs role {needed}" + (f"; {why}" if why else "")
        record("refused", reason)
        raise PermissionDeniedError(action, needed, principal.name, principal.role, why)
    if needed != "viewer":
        record("ok", why)
    if principal.key_id is not None:
        os.environ["RAYMLOPS_USER"] = principal.name
    return principal


# ---------------------------------------------------------------- the job


def job_actions(cfg: Any, stages: Iterable[str]) -> list[str]:
    """The guarded actions a job with these stages performs, in the order they happen."""
    names = list(stages)
    actions = ["job.run"]
    if "register" in names:
        actions.append("models.register")
        on_pass = getattr(cfg.registry.on_pass, "value", cfg.registry.on_pass)
        if str(on_pass) != "none":
            actions.append("models.promote")
    if "deploy" in names:
        actions.append("serve.deploy")
    if "monitor" in names:
        actions.append("monitor.run")
    if "loop" in names:
        actions.append("retrain.run")
    return actions


def authorize_job(cfg: Any, stages: Iterable[str]) -> Principal:
    """Check every action of the job before its first stage runs, so a refused job changes nothing.

    Raises:
        PermissionDeniedError: Naming the first action the caller may not do; the message says which
            stages or settings need it.
    """
    security = cfg.security
    principal = resolve_principal(security)
    actions = job_actions(cfg, stages)
    target = f"{cfg.run_name} (env={cfg.env.name})"
    for action in actions:
        if not role_allows(principal.role, needed_role(action)):
            authorize(security, action, target, principal=principal, why=_JOB_HINTS.get(action, ""))
    authorize(security, "job.run", target, principal=principal, why=f"actions: {', '.join(actions)}")
    return principal


_JOB_HINTS = {
    "models.promote": "registry.on_pass moves an alias; registry.on_pass=none registers a candidate only",
    "serve.deploy": "the deploy stage; leave it out of stages=[...] or set serve.enabled=false",
    "retrain.run": "the loop stage retrains and rolls out",
}


def actions_markdown() -> str:
    """The role matrix of ``docs/security.md``: every action, the role it needs, its CLI commands."""
    commands: dict[str, list[str]] = {}
    for command, action in CLI_ACTIONS.items():
        commands.setdefault(action, []).append(f"`{command}`")
    lines = [
        "| action | lowest role | " + " | ".join(ROLES) + " | what | CLI |",
        "|---" * (len(ROLES) + 4) + "|",
    ]
    for action, (needed, what) in sorted(ACTIONS.items(), key=lambda item: (role_rank(item[1][0]), item[0])):
        marks = " | ".join("yes" if role_allows(role, needed) else "-" for role in ROLES)
        lines.append(f"| `{action}` | {needed} | {marks} | {what} | {', '.join(commands.get(action, []))} |")
    return "\n".join(lines) + "\n"


def routes_markdown() -> str:
    """The serving routes and the role each needs (``raymlops.serving.protocols.registry.ROUTE_ROLES``)."""
    from raymlops.serving.protocols.registry import ROUTE_ROLES

    lines = ["| route | lowest role |", "|---|---|"]
    for (method, path), role in ROUTE_ROLES.items():
        lines.append(f"| `{method} {path}` | {role or 'none (open)'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m raymlops.security.roles: the tables of docs/security.md
    print(actions_markdown() + "\n" + routes_markdown(), end="")
