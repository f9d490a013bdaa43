"""The settings the router's middlewares read per request, handed to them explicitly.

The API-key and rate-limit middlewares are built with the FastAPI app at import time, before the
replica's ``Router`` exists; the ``Router`` updates this handle on every ``reconfigure`` (one replica
per process, so one handle per process). Until the first update the key check answers 503: a replica
never serves with auth it has not been told.
"""

from __future__ import annotations

from collections.abc import Callable

from raymlops.security.keys import AuthTable
from raymlops.serving.rate_limit import RateLimitSettings

__all__ = ["MiddlewareSettings"]


class MiddlewareSettings:
    """The current ``AuthTable`` and ``RateLimitSettings``, and who is told of a refused request."""

    def __init__(self) -> None:
        self._auth: AuthTable | None = None
        self._rate_limit = RateLimitSettings()
        self._on_limited: Callable[[str, str, int, bool], None] | None = None

    def update(self, auth: AuthTable, rate_limit: RateLimitSettings) -> None:
        """Both at once (two attribute stores: a request reads either the old or the new one)."""
        self._auth, self._rate_limit = auth, rate_limit

    def on_rate_limited(self, callback: Callable[[str, str, int, bool], None]) -> None:
        self._on_limited = callback

    def auth(self) -> AuthTable:
        """The key table; ``ApiKeyMiddleware`` refuses the request (503) while there is none."""
        if self._auth is None:
            raise RuntimeError("the router has not been configured yet")
        return self._auth

    def rate_limit(self) -> RateLimitSettings:
        return self._rate_limit

    def rate_limited(self, label: str, key: str, retry_after_s: int, first: bool) -> None:
        if self._on_limited is not None:
            self._on_limited(label, key, retry_after_s, first)
