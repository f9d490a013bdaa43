"""Routing policy: which version answers a request, and which one shadows it (DESIGN §4).

Pure logic, no Ray: the router calls these per request, ``spec.parse_user_config`` calls the checks.

Per model name the routing table holds its versions, each with a ``weight`` (``ModelSpec.weight``),
plus an optional ``RoutePolicy``:

- **weighted split** (canary 95/5, A/B 50/50): a request goes to version *i* with probability
  ``weight_i / sum(weights)``; weight 0 keeps a version loaded but unrouted.
- **sticky**: ``{"header": "x-user-id"}`` or ``{"field": "user_id"}``. The key's blake2b hash maps it
  to a point in [0, 1) which is placed on the cumulative weights, so the same key reaches the same
  version on every replica and after restarts. Requests without the key fall back to the weighted
  random choice. When a candidate listed last grows from 5% to 10%, keys already on it stay on it.
- **shadow**: ``{"version": "3", "fraction": 0.2}``: that version also scores a random ``fraction`` of
  the name's requests (unless it served them itself). Its answer is never returned; only its latency,
  outcome and agreement with the served answer are recorded.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raymlops.errors import ConfigError
from raymlops.settings_model import validate_settings


class Version(Protocol):
    """What routing reads of a version (``ModelSpec`` is one): kept structural, so that the policy
    needs nothing of the spec module, which builds on it."""

    @property
    def version(self) -> str: ...

    @property
    def weight(self) -> float: ...


V = TypeVar("V", bound=Version)

__all__ = [
    "STICKY_SOURCES",
    "RoutePolicy",
    "Shadow",
    "ShadowPool",
    "Sticky",
    "agreement",
    "check_policy",
    "choose_version",
    "key_point",
    "parse_policies",
    "sample_shadow",
    "sticky_key_from_fields",
]

STICKY_SOURCES = ("header", "field")
# RFC 9110 token: what an HTTP header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HASH_SCALE = float(2**64)
_STRICT = ConfigDict(extra="forbid", strict=True)
_NON_EMPTY = "must be a non-empty string"


class _StickyShape(BaseModel):
    """``sticky``: one of the two (exactly one is checked by ``RoutePolicy.from_dict``)."""

    model_config = _STRICT

    header: str | None = Field(None, min_length=1, description=_NON_EMPTY)
    field: str | None = Field(None, min_length=1, description=_NON_EMPTY)


class _ShadowShape(BaseModel):
    """``shadow``: the version that also scores a fraction of the requests."""

    model_config = _STRICT

    version: str = Field(min_length=1, description=_NON_EMPTY)
    fraction: float = Field(ge=0, le=1, description="must be a number in [0, 1]")


class _PolicyShape(BaseModel):
    """A name's policy; its parts are checked by their own shapes, under their own keys."""

    model_config = _STRICT

    sticky: Any = None
    shadow: Any = None


@dataclass(frozen=True)
class Sticky:
    """Where a request's sticky key comes from: an HTTP header or a field of the request body.

    Attributes:
        source: ``"header"`` or ``"field"``. A field is read from the first record of a ``/v1`` predict
            body; for ``/v2`` infer from the request's ``parameters``, else the first element of the
            input tensor of that name.
        key: The header name (matched case-insensitively) or the field name.
    """

    source: str
    key: str

    def __post_init__(self) -> None:
        if self.source not in STICKY_SOURCES:
            raise ConfigError(
                "serving.policies.sticky", f"source {self.source!r} is not one of header, field."
            )
        validate_settings(_StickyShape, {self.source: self.key}, "serving.policies.sticky")
        if self.source == "header" and not _HEADER_NAME.match(self.key):
            raise ConfigError(
                "serving.policies.sticky.header", f"{self.key!r} is not a valid HTTP header name."
            )

    def to_dict(self) -> dict[str, str]:
        values: dict[str, Any] = {self.source: self.key}
        return _StickyShape.model_construct(**values).model_dump(exclude_none=True)


@dataclass(frozen=True)
class Shadow:
    """A version that also scores ``fraction`` of a name's requests; its answers are discarded."""

    version: str
    fraction: float

    def __post_init__(self) -> None:
        validate_settings(
            _ShadowShape, {"version": self.version, "fraction": self.fraction}, "serving.policies.shadow"
        )

    def to_dict(self) -> dict[str, Any]:
        data = _ShadowShape.model_construct(version=self.version, fraction=self.fraction).model_dump()
        return {**data, "fraction": float(data["fraction"])}


@dataclass(frozen=True)
class RoutePolicy:
    """Sticky assignment and shadowing for one model name; the weights live on the ``ModelSpec``s."""

    sticky: Sticky | None = None
    shadow: Shadow | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; ``None`` parts are left out."""
        parts = {name: getattr(self, name) for name in _PolicyShape.model_fields}
        dumped = {name: None if part is None else part.to_dict() for name, part in parts.items()}
        return _PolicyShape.model_construct(**dumped).model_dump(exclude_none=True)

    @classmethod
    def from_dict(cls, name: str, data: Any) -> RoutePolicy:
        """Inverse of ``to_dict``; every unknown key or bad value is a ``ConfigError`` naming it."""
        key = f"serving.policies[{name!r}]"
        if not isinstance(data, Mapping):
            raise ConfigError(key, f'must be a mapping like {{"sticky": ..., "shadow": ...}}, got {data!r}.')
        parts = validate_settings(_PolicyShape, data, key)
        sticky = shadow = None
        raw = parts.sticky
        if raw is not None:
            if not isinstance(raw, Mapping) or len(raw) != 1:
                raise ConfigError(
                    f"{key}.sticky",
                    f'must be {{"header": NAME}} or {{"field": NAME}} (exactly one), got {raw!r}.',
                )
            validate_settings(_StickyShape, raw, f"{key}.sticky")
            source, value = next(iter(raw.items()))
            sticky = Sticky(source, value)
        raw = parts.shadow
        if raw is not None:
            if not isinstance(raw, Mapping):
                raise ConfigError(f"{key}.shadow", f'must be {{"version": V, "fraction": F}}, got {raw!r}.')
            checked = validate_settings(_ShadowShape, raw, f"{key}.shadow")
            shadow = Shadow(checked.version, checked.fraction)
        return cls(sticky=sticky, shadow=shadow)


def check_policy(name: str, policy: RoutePolicy, specs: Sequence[Version]) -> None:
    """A policy must refer to versions that the name actually serves."""
    if policy.shadow is not None:
        versions = [s.version for s in specs]
        if policy.shadow.version not in versions:
            raise ConfigError(
                f"serving.policies[{name!r}].shadow.version",
                f"{policy.shadow.version!r} is not a deployed version of {name!r}; "
                "add its ModelSpec (weight 0 keeps it out of the served traffic).",
                versions,
            )


def parse_policies(raw: Any, models: Mapping[str, Sequence[Version]]) -> dict[str, RoutePolicy]:
    """``user_config["policies"]`` -> ``{name: RoutePolicy}``, checked against the served names."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("serving.user_config.policies", f"must map model name -> policy, got {raw!r}.")
    policies = {}
    for name, data in raw.items():
        if name not in models:
            raise ConfigError(f"serving.policies.{name}", "names no served model.", models)
        policy = RoutePolicy.from_dict(name, data)
        check_policy(name, policy, models[name])
        policies[name] = policy
    return policies


def key_point(name: str, key: str) -> float:
    """A sticky key's stable point in [0, 1): blake2b of ``name`` and ``key``, not Python's salted hash.

    The model name is mixed in so that two models' canaries do not catch the same users.
    """
    digest = hashlib.blake2b(f"{name}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SCALE


def choose_version(specs: Sequence[V], rng: random.Random, *, key: str | None = None, name: str = "") -> V:
    """Pick the version that answers one request.

    Args:
        specs: The name's versions in config order; their ``weight``s need not sum to 1.
        rng: Source of the weighted random choice when there is no sticky key.
        key: The request's sticky key, or ``None``; the same (``name``, ``key``) always picks the same
            version for the same weights.
        name: The model name the key is hashed with.
    """
    if len(specs) == 1:
        return specs[0]
    point = rng.random() if key is None else key_point(name, key)
    total = math.fsum(s.weight for s in specs)
    target = point * total
    cumulative = 0.0
    last = specs[0]
    for spec in specs:
        if spec.weight <= 0:
            continue
        cumulative += spec.weight
        last = spec
        if target < cumulative:
            return spec
    return last  # point * total rounded up to total: the last version with weight


def sample_shadow(shadow: Shadow | None, served_version: str, rng: random.Random) -> bool:
    """Whether this request is mirrored to the shadow version (never when that version served it)."""
    if shadow is None or shadow.fraction <= 0 or shadow.version == served_version:
        return False
    return shadow.fraction >= 1 or rng.random() < shadow.fraction


def sticky_key_from_fields(fields: Any, field: str) -> str | None:
    """The sticky key from a mapping of request fields (a ``/v1`` record, ``/v2`` parameters).

    Strings and integers make keys; anything else (missing, null, a float, a list) means "no key",
    so the request falls back to the weighted random choice.
    """
    if not isinstance(fields, Mapping):
        return None
    value = fields.get(field)
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def agreement(
    served: np.ndarray, served_threshold: float, shadow: np.ndarray, shadow_threshold: float
) -> tuple[float, float]:
    """(share of rows whose labels agree, mean |served - shadow| probability) for one request."""
    if served.shape != shadow.shape or served.size == 0:
        raise ValueError(f"cannot compare answers of shapes {served.shape} and {shadow.shape}")
    labels = (served >= served_threshold) == (shadow >= shadow_threshold)
    return float(np.mean(labels)), float(np.mean(np.abs(served.astype(np.float64) - shadow)))


class ShadowPool:
    """Runs shadow calls on one worker thread, never more than ``limit`` running or queued at once.

    ``submit`` returns at once; a call beyond the limit is refused (the caller counts it as dropped)
    instead of queueing behind a slow shadow model and piling up memory.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raymlops-shadow")
        self._lock = threading.Lock()
        self.in_flight = 0

    def submit(self, limit: int, job: Callable[[], None]) -> bool:
        """Queue ``job`` unless ``limit`` calls are already in flight; whether it was queued."""
        with self._lock:
            if self.in_flight >= limit:
                return False
            self.in_flight += 1
        try:
            self._executor.submit(job).add_done_callback(self._done)
        except RuntimeError:  # the pool is shutting down with the replica
            self._done(None)
            return False
        return True

    def _done(self, _: Future[None] | None) -> None:
        with self._lock:
            self.in_flight -= 1
