"""Per-client rate limits for the serving router: a token bucket per API key id, per replica.

A client (its API key id; its address when auth is off) holds a bucket of ``burst`` tokens that
refills at ``requests_per_s``; each request takes one. An empty bucket answers 429 with a
``Retry-After`` header, the whole seconds until one token is back (at least 1). Health routes
(``/v2/health/*``) are never limited: a load balancer's probes must not starve a client, nor the
other way round.

The limit is per replica: with N router replicas a client gets up to N times the rate, as Serve's
proxy spreads its requests (a shared counter would put a network hop on every request). Buckets
live in an LRU of ``max_clients``: a flood of new addresses evicts the oldest buckets instead of
growing memory, and an evicted client starts again from a full bucket, which errs on the side of
serving it.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from raymlops.errors import ConfigError
from raymlops.serving.asgi import route_path
from raymlops.settings_model import validate_settings

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["RateLimitMiddleware", "RateLimitSettings", "RateLimiter", "TokenBucket"]

EXEMPT_PREFIX = "/v2/health/"


@dataclass(frozen=True)
class RateLimitSettings:
    """``serve.rate_limit``: ``requests_per_s`` (0: no limit) and ``burst`` per client and replica."""

    requests_per_s: float = 0.0
    burst: int = 50

    def __post_init__(self) -> None:
        validate_settings(_RateLimitShape, asdict(self), "serve.rate_limit")

    @property
    def enabled(self) -> bool:
        return self.requests_per_s > 0

    def to_dict(self) -> dict[str, Any]:
        data = _RateLimitShape.model_construct(**asdict(self)).model_dump()
        return {**data, "requests_per_s": float(data["requests_per_s"])}

    @classmethod
    def from_dict(cls, data: Any) -> RateLimitSettings:
        if data is None:
            return cls()
        if isinstance(data, RateLimitSettings):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError(
                "serve.rate_limit", f'must be {{"requests_per_s": R, "burst": N}} or null, got {data!r}.'
            )
        return cls(**validate_settings(_RateLimitShape, data, "serve.rate_limit").model_dump())


class _RateLimitShape(BaseModel):
    """``serve.rate_limit``'s shape; the defaults are :class:`RateLimitSettings`'s."""

    model_config = ConfigDict(extra="forbid", strict=True)
    unknown_problem: ClassVar[str] = "is not a rate limit setting."

    requests_per_s: float = Field(
        RateLimitSettings.requests_per_s,
        ge=0,
        allow_inf_nan=False,
        description="must be a finite number >= 0 (0: no limit)",
    )
    burst: int = Field(
        RateLimitSettings.burst,
        ge=1,
        description="must be an integer >= 1 (requests a client may send at once)",
    )


class TokenBucket:
    """``capacity`` tokens refilled continuously at ``rate`` per second; ``take`` spends one."""

    __slots__ = ("capacity", "limited", "rate", "tokens", "updated")

    def __init__(self, rate: float, capacity: int, now: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.updated = float(capacity), now
        self.limited = False  # refused since its last allowed request: one audit record per episode

    def take(self, now: float) -> float:
        """Spend a token if there is one: returns 0.0, else the seconds until there will be one."""
        # max(): a clock that steps back (an injected one, or time adjusted) never drains the bucket.
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.capacity), self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.limited = False
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """A ``TokenBucket`` per client key, the ``max_clients`` most recently seen kept (LRU).

    Args:
        settings: The rate and burst every client gets.
        max_clients: Buckets kept; the least recently used one is dropped beyond it.
        clock: Seconds, monotonic; tests inject their own.
    """

    def __init__(
        self,
        settings: RateLimitSettings,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.max_clients, self._clock = settings, max_clients, clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, client: str) -> tuple[int, bool]:
        """``(retry_after_s, first)``: 0 when ``client`` may go on, else whole seconds to wait (>= 1);
        ``first`` is true for the first refusal since the client's last allowed request."""
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = TokenBucket(self.settings.requests_per_s, self.settings.burst, now)
            self._buckets[client] = bucket
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        wait_s = bucket.take(now)
        if wait_s <= 0.0:
            return 0, False
        first, bucket.limited = not bucket.limited, True
        # HTTP's Retry-After is whole seconds; rounding up means a client that obeys it succeeds.
        return max(1, math.ceil(wait_s)), first


def _client_key(scope: Scope) -> tuple[str, str]:
    """``(bucket key, metric label)``: the API key id ApiKeyMiddleware verified, else the client address.

    Addresses are not metric labels (unbounded cardinality): they count as ``anonymous``.
    """
    key_id = (scope.get("state") or {}).get("api_key_id")
    if key_id:
        return f"key:{key_id}", str(key_id)
    client = scope.get("client")
    return f"addr:{client[0] if client else 'unknown'}", "anonymous"


class RateLimitMiddleware:
    """ASGI middleware, inside ``ApiKeyMiddleware`` (so that it sees the verified key id): 429 beyond
    the client's rate.

    Args:
        app: The wrapped ASGI app.
        settings: Returns the current ``RateLimitSettings``, called per request so that a redeploy
            with a new limit applies in place (buckets start over when the settings change).
        on_limited: Called with ``(metric label, bucket key, retry_after_s, first)`` for every refused
            request: metrics, and an audit record for the first refusal of an episode.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: Callable[[], RateLimitSettings],
        on_limited: Callable[[str, str, int, bool], None] | None = None,
        max_clients: int = 10_000,
    ) -> None:
        self.app, self._settings, self._on_limited = app, settings, on_limited
        self._max_clients = max_clients
        self._limiter: RateLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope).startswith(EXEMPT_PREFIX):
            await self.app(scope, receive, send)
            return
        settings = self._settings()
        if not settings.enabled:
            await self.app(scope, receive, send)
            return
        limiter = self._limiter
        if limiter is None or limiter.settings != settings:
            limiter = self._limiter = RateLimiter(settings, self._max_clients)
        key, label = _client_key(scope)
        retry_after_s, first = limiter.check(key)
        if not retry_after_s:
            await self.app(scope, receive, send)
            return
        if self._on_limited is not None:
            self._on_limited(label, key, retry_after_s, first)
        message = (
            f"rate limit exceeded: {settings.requests_per_s:g} requests/s with bursts of {settings.burst} "
            f"per client; retry in {retry_after_s} s (Retry-After)."
        )
        body = json.dumps({"error": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after_s).encode()),
        ]
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
