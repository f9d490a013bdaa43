"""The security audit log: who did what, when, with what outcome and why, refusals included.

One JSON object a line in ``security.audit_log`` (default ``<state_dir>/audit/security.jsonl``), appended
under an exclusive lock (``filelock``: ``flock`` on ``.<name>.lock`` beside it) so that jobs, the CLI and
serving replicas on one machine (or one shared filesystem) never interleave lines. Each record carries
``prev``, the SHA-256 of the line before it: editing or deleting a line breaks the chain, and
:func:`verify_chain` names the first broken line. (An attacker who can rewrite the whole file can rebuild
the chain; ship the file to append-only storage for that threat.)

Model governance keeps its own per-model records in the registry (``raymlops.registry.governance``);
every action that the role model guards is recorded here as well, so one file answers "who did
what" across the CLI, the job and serving.

Records never hold secrets: ``details`` is the caller's, so callers pass key ids, never keys.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "AUDIT_LOG_ENV",
    "OUTCOMES",
    "SecurityAuditRecord",
    "audit_event",
    "current_user",
    "read_audit",
    "verify_chain",
]

AUDIT_LOG_ENV = "RAYMLOPS_AUDIT_LOG"  # where audit_event writes when no path is given
OUTCOMES = ("ok", "refused", "error")
_GENESIS = "0" * 64


def current_user() -> str:
    """Who acts: ``RAYMLOPS_USER`` (set by a job runner or the API layer), else the OS user."""
    return os.environ.get("RAYMLOPS_USER") or getpass.getuser()


@dataclass(frozen=True)
class SecurityAuditRecord:
    when: str  # ISO 8601, UTC, microseconds
    who: str  # a user name or key name; never a key
    role: str  # the role the action was judged with ("" when unknown: e.g. an invalid key)
    action: str  # an action of raymlops.security.roles.ACTIONS, or an event (artifact-refused, ...)
    target: str  # what it was done to: a model, an app, a data ref, a key id
    outcome: str  # ok | refused | error
    why: str
    details: dict[str, Any] = field(default_factory=dict)
    prev: str = _GENESIS  # SHA-256 (hex) of the previous line; the first record's is all zeros


def _default_path() -> Path | None:
    value = os.environ.get(AUDIT_LOG_ENV)
    return Path(value) if value else None


@contextlib.contextmanager
def _locked_append(path: Path, timeout_s: float = 60.0) -> Iterator[Any]:
    # The lock is a separate file: filelock opens its lock file truncating, which the log must never be.
    import filelock

    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    try:
        with filelock.FileLock(lock, timeout=timeout_s, mode=0o600, poll_interval=0.02):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "r+b") as handle:
                yield handle
    except filelock.Timeout:
        raise TimeoutError(
            f"The audit log lock {lock} was held for more than {timeout_s:.0f} s; another process "
            f"writing {path} is stuck. Find it with `fuser {lock}`."
        ) from None


def _last_line(handle: Any) -> bytes | None:
    """The file's last line, read backwards from the end in 4 KiB steps (the file only grows)."""
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    if end == 0:
        return None
    position, tail = end, b""
    while position > 0:
        step = min(4096, position)
        position -= step
        handle.seek(position)
        tail = handle.read(step) + tail
        cut = tail.rstrip(b"\n").rfind(b"\n")
        if cut >= 0:
            return tail[cut + 1 :].rstrip(b"\n")
    return tail.rstrip(b"\n")


def audit_event(
    action: str,
    target: str,
    outcome: str,
    why: str,
    *,
    who: str | None = None,
    role: str = "",
    details: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> SecurityAuditRecord:
    """Append one record to the audit log at ``path`` (else ``$RAYMLOPS_AUDIT_LOG``) and return it.

    With neither set, the record is returned but written nowhere (a library call outside any job).
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome {outcome!r} is not one of {OUTCOMES}")
    if who is None:
        who = current_user()
    record = SecurityAuditRecord(
        when=dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
        who=who,
        role=role,
        action=action,
        target=str(target),
        outcome=outcome,
        why=why,
        details=dict(details or {}),
    )
    where = Path(path) if path is not None else _default_path()
    if where is None:
        return record
    with _locked_append(where) as handle:
        last = _last_line(handle)
        prev = hashlib.sha256(last).hexdigest() if last else _GENESIS
        record = SecurityAuditRecord(**{**asdict(record), "prev": prev})
        line = json.dumps(asdict(record), sort_keys=True, default=str).encode() + b"\n"
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return record


def read_audit(path: str | os.PathLike[str]) -> list[SecurityAuditRecord]:
    """Every record, oldest first (an absent file holds none)."""
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    return [SecurityAuditRecord(**json.loads(line)) for line in lines if line.strip()]


def verify_chain(path: str | os.PathLike[str]) -> int | None:
    """The 1-based number of the first line whose ``prev`` does not match the line before; None: intact."""
    try:
        lines = [line for line in Path(path).read_bytes().splitlines() if line.strip()]
    except FileNotFoundError:
        return None
    expected = _GENESIS
    for number, line in enumerate(lines, start=1):
        try:
            prev = json.loads(line).get("prev")
        except (json.JSONDecodeError, AttributeError):
            return number
        if prev != expected:
            return number
        expected = hashlib.sha256(line).hexdigest()
    return None
