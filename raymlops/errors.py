"""One root error and structured, picklable subclasses.

Every message says what failed, the offending value, the constraint, and the fix or the valid
choices. ``__reduce__`` keeps the structured fields when an error crosses Ray processes.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "AliasConflictError",
    "AuthError",
    "ConfigError",
    "DataValidationError",
    "DataVersionError",
    "DeploymentError",
    "ExportParityError",
    "GateFailedError",
    "GovernanceError",
    "IntegrityError",
    "MissingDependencyError",
    "ModelNotFoundError",
    "OnlineStoreError",
    "PermissionDeniedError",
    "RayMLOpsError",
    "RequestError",
    "StageError",
    "UnsafeNameError",
    "did_you_mean",
]


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean ...? Valid choices: ...' for an unknown name."""
    options = sorted(set(choices))
    hint = difflib.get_close_matches(value, options, n=3)
    text = f" Did you mean {', '.join(map(repr, hint))}?" if hint else ""
    return text + f" Valid choices: {', '.join(options)}."


class RayMLOpsError(Exception):
    """Root of every error raymlops raises on purpose."""


class ConfigError(RayMLOpsError, ValueError):
    """A config value is missing, misspelt or out of range."""

    def __init__(self, key: str, problem: str, choices: Iterable[str] | None = None) -> None:
        self.key, self.problem = key, problem
        self.choices = tuple(sorted(choices)) if choices is not None else None
        message = f"Config {key!r}: {problem}"
        if self.choices is not None:
            message += did_you_mean(key.rsplit(".", 1)[-1], self.choices)
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.key, self.problem, self.choices))


class DataValidationError(RayMLOpsError):
    """A validation rule failed; ``report`` holds the whole validation report."""

    def __init__(self, failures: list[str], report: Mapping[str, Any] | None = None) -> None:
        self.failures, self.report = list(failures), dict(report or {})
        super().__init__(
            f"Data validation failed ({len(self.failures)} rule(s)): " + "; ".join(self.failures)
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures, self.report))


class DataVersionError(RayMLOpsError):
    """A recorded data version can no longer be read as it was (its files changed or vanished)."""

    def __init__(self, version: str, problem: str) -> None:
        self.version, self.problem = version, problem
        super().__init__(f"Data version {version}: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.version, self.problem))


class GateFailedError(RayMLOpsError):
    """An evaluation gate was not met; nothing was registered or deployed."""

    def __init__(self, failures: list[str], metrics: Mapping[str, float] | None = None) -> None:
        self.failures, self.metrics = list(failures), dict(metrics or {})
        super().__init__("Evaluation gate failed: " + "; ".join(self.failures))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.failures, self.metrics))


class ExportParityError(RayMLOpsError):
    """The exported ONNX graph disagrees with the Python pipeline on a sample."""

    def __init__(self, max_abs_diff: float, tolerance: float) -> None:
        self.max_abs_diff, self.tolerance = max_abs_diff, tolerance
        super().__init__(
            f"ONNX export parity check failed: max |onnx - python| = {max_abs_diff:.3g} "
            f"exceeds tolerance {tolerance:.3g}. The graph does not reproduce the fitted pipeline."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.max_abs_diff, self.tolerance))


class StageError(RayMLOpsError):
    """A stage failed for a reason not already described by a raymlops error; the cause is chained."""

    def __init__(self, stage: str, run_id: str, detail: str = "") -> None:
        self.stage, self.run_id, self.detail = stage, run_id, detail
        super().__init__(f"Stage {stage!r} failed in run {run_id}: {detail or 'see the chained cause'}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.stage, self.run_id, self.detail))


class ModelNotFoundError(RayMLOpsError, LookupError):
    """No such model (or version) is registered or served."""

    def __init__(self, name: str, available: Iterable[str] = ()) -> None:
        self.name, self.available = name, tuple(sorted(available))
        message = f"Unknown model {name!r}."
        if self.available:
            message += did_you_mean(name, self.available)
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.available))


class DeploymentError(RayMLOpsError):
    """A Serve deployment could not be created or did not become ready."""


class AuthError(RayMLOpsError):
    """An API key operation failed (unknown key id, unreadable key file); the message says why."""


class RequestError(RayMLOpsError, ValueError):
    """A serving request is malformed; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        self.message, self.status = message, status
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message, self.status))


class MissingDependencyError(RayMLOpsError, ImportError):
    """An optional package is needed for the chosen config."""

    def __init__(self, package: str, feature: str) -> None:
        self.package, self.feature = package, feature
        super().__init__(f"{feature} needs the package {package!r}: pip install {package}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.package, self.feature))


class OnlineStoreError(RayMLOpsError):
    """The online feature store cannot be reached or read; serving answers 503 (try again later)."""

    def __init__(self, store: str, problem: str) -> None:
        self.store, self.problem = store, problem
        super().__init__(f"Online store {store} is unavailable: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.store, self.problem))


class GovernanceError(RayMLOpsError):
    """A registry action is not allowed in the version's current state; the message says why."""


class AliasConflictError(GovernanceError):
    """An alias moved between reading it and changing it: another operator or job won the race."""

    def __init__(self, model: str, alias: str, expected: str | None, found: str | None) -> None:
        self.model, self.alias, self.expected, self.found = model, alias, expected, found
        super().__init__(
            f"Alias {alias!r} of model {model!r} is at version {found or 'none'}, not {expected or 'none'} "
            f"as this change expected: someone else changed it meanwhile. Nothing was changed; "
            f"check `python -m raymlops models history {model}` and retry."
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.model, self.alias, self.expected, self.found))


class PermissionDeniedError(AuthError):
    """The caller's role may not perform an action (the refusal is audited)."""

    def __init__(self, action: str, needed: str, who: str, role: str, hint: str = "") -> None:
        self.action, self.needed, self.who, self.role, self.hint = action, needed, who, role, hint
        message = f"{who} (role {role}) may not {action}: it needs role {needed} or higher"
        super().__init__(message + (f" ({hint})." if hint else "."))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.action, self.needed, self.who, self.role, self.hint))


class IntegrityError(RayMLOpsError):
    """Stored bytes do not match their recorded digest or signature (tampered or corrupt)."""


class UnsafeNameError(RayMLOpsError, ValueError):
    """A name that becomes part of a path is not a plain, safe name."""

    def __init__(self, what: str, value: object, problem: str) -> None:
        self.what, self.value, self.problem = what, value, problem
        super().__init__(f"{what} {value!r} is refused: {problem}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.what, self.value, self.problem))
