"""The serving router's API-key check: an ASGI middleware (DESIGN §4).

A key may call every route whose role is at or below its own (``raymlops.security.role_ranks``).
The lowest role of each route is what the serving protocols declare
(``raymlops.serving.protocols.registry.ROUTE_ROLES``); a route nobody declared needs ``admin``
(default deny: a new endpoint nobody mapped is never open by accident; ``tests/unit/test_auth.py``
fails until it is mapped). Keys, their hashing and the table the router receives live in
``raymlops.security.keys``: the middleware checks each request against that ``AuthTable``; a key
verified once is remembered by its SHA-256 (an LRU), so only a key's first request in a replica pays
the ~0.1 s of PBKDF2.

Keys are never logged: messages and log lines carry at most the key id.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from raymlops.security.keys import KEY_HINT, AuthTable, KeyRecord, parse_key, verify_key
from raymlops.security.role_ranks import role_allows
from raymlops.serving.asgi import route_path
from raymlops.serving.protocols.registry import ROUTE_ROLES

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["ApiKeyMiddleware", "required_role"]

logger = logging.getLogger(__name__)

_UNLISTED = "admin"  # the role a route no protocol declares needs
_PARAM = re.compile(r"\{[^}/]+\}")


def _pattern(path: str) -> re.Pattern[str]:
    """FastAPI's ``{param}`` matches one path segment, as it does here."""
    parts = _PARAM.split(path)
    return re.compile("[^/]+".join(re.escape(p) for p in parts) + r"\Z")


_COMPILED = [(method, _pattern(path), role) for (method, path), role in ROUTE_ROLES.items()]


def _lookup(method: str, path: str) -> tuple[bool, str | None]:
    method = "GET" if method == "HEAD" else method  # HEAD is checked as GET
    for listed, pattern, role in _COMPILED:
        if listed == method and pattern.match(path):
            return True, role
    return False, _UNLISTED


def required_role(method: str, path: str) -> str | None:
    """The lowest role that may call ``method path`` (``None``: anyone); unlisted routes need admin."""
    return _lookup(method, path)[1]


class _Verifier:
    """PBKDF2 once per key and replica; afterwards an LRU keyed by the key's SHA-256.

    An entry holds the stored hash the key matched: it counts only while the current table still
    holds that hash under that id, so a revoked (or replaced) key fails on its next request.
    """

    def __init__(self, max_cached: int = 1024, max_concurrent: int = 2) -> None:
        self._cache: OrderedDict[bytes, str] = OrderedDict()
        self._max_cached = max_cached
        # PBKDF2 runs off the event loop (it releases the GIL); at most this many at once, so that
        # a flood of wrong secrets burns bounded CPU.
        self._slots = asyncio.Semaphore(max_concurrent)

    async def verify(self, key: str, table: AuthTable) -> KeyRecord | None:
        parsed = parse_key(key)
        record = table.keys.get(parsed[0]) if parsed else None
        if record is None:  # unknown id: no hashing at all
            return None
        fingerprint = hashlib.sha256(key.encode()).digest()
        cached = self._cache.get(fingerprint)
        if cached is not None and hmac.compare_digest(cached, record.hash):
            self._cache.move_to_end(fingerprint)
            return record
        async with self._slots:
            valid = await asyncio.to_thread(verify_key, key, record.salt, record.hash)
        if not valid:
            return None
        self._cache[fingerprint] = record.hash
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return record


def _presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    bearer = api_key = None
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                bearer = token.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return bearer or api_key


class ApiKeyMiddleware:
    """ASGI middleware: 401 without a valid key, 403 when its role is too low, else the app.

    Args:
        app: The wrapped ASGI app.
        table: Returns the current ``AuthTable``; called on every request, so a new table deployed
            through ``reconfigure`` applies at once. If it raises, the request is refused (503).
        max_cached_keys: Verified keys remembered per replica.
    """

    def __init__(self, app: ASGIApp, table: Callable[[], AuthTable], max_cached_keys: int = 1024) -> None:
        self.app, self._table = app, table
        self._verifier = _Verifier(max_cached_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            table = self._table()
            if not isinstance(table, AuthTable):
                raise TypeError(f"the auth table getter returned {type(table).__name__}, not an AuthTable")
        except Exception:
            logger.exception("auth table unavailable: refusing the request")
            await _answer(scope, send, 503, "authentication state unavailable; retry shortly.")
            return
        if not table.enabled:
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), route_path(scope)
        listed, needed = _lookup(method, path)
        if needed is None:  # OPEN: anyone may call it
            await self.app(scope, receive, send)
            return
        key = _presented_key(scope["headers"])
        if key is None:
            await _answer(
                scope,
                send,
                401,
                f"missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>' ({KEY_HINT}).",
                challenge='Bearer realm="raymlops"',
            )
            return
        record = await self._verifier.verify(key, table)
        if record is None:
            parsed = parse_key(key)
            key_id = parsed[0] if parsed else None
            logger.info("auth denied status=401 key_id=%s method=%s path=%s", key_id, method, path)
            what = f"key id {key_id!r}" if key_id else "not of the form rmk_<key_id>_<secret>"
            await _audit(table, "authenticate", method, path, f"401 invalid API key ({what})", key_id or "")
            await _answer(
                scope,
                send,
                401,
                f"invalid API key ({what}): unknown or revoked; {KEY_HINT}.",
                challenge='Bearer realm="raymlops", error="invalid_token"',
            )
            return
        if not role_allows(record.role, needed):
            logger.info(
                "auth denied status=403 key_id=%s role=%s needed=%s method=%s path=%s",
                record.key_id,
                record.role,
                needed,
                method,
                path,
            )
            why = f"{method} {path} needs {needed} or higher"
            if not listed:
                why = f"{method} {path} is no mapped route (or none at all): only {needed} keys may call it"
            action = "predict" if needed == "predictor" else f"http:{needed}"
            who = record.name or record.key_id
            await _audit(table, action, method, path, f"403 {why}", record.key_id, who=who, role=record.role)
            await _answer(scope, send, 403, f"role {needed} needed, key has {record.role}: {why}.")
            return
        # For endpoints that record who called (request.state.api_key_id).
        scope.setdefault("state", {})["api_key_id"] = record.key_id
        await self.app(scope, receive, send)


async def _audit(
    table: AuthTable, action: str, method: str, path: str, why: str, key_id: str, **whom: str
) -> None:
    """A refusal as a security audit record (off the event loop: the append takes a lock and fsyncs)."""
    if not table.audit_log:
        return
    from raymlops.security.audit import audit_event

    try:
        details = {"key_id": key_id} if key_id else {}
        who, role = whom.get("who") or key_id or "anonymous", whom.get("role", "")
        record = functools.partial(
            audit_event, action, f"{method} {path}", "refused", why, who=who, role=role, details=details
        )
        await asyncio.to_thread(record, path=table.audit_log)
    except OSError:  # an unwritable audit log must not turn a 401 into a 500
        logger.exception("audit log %s not writable", table.audit_log)


async def _answer(scope: Scope, send: Send, status: int, message: str, challenge: str | None = None) -> None:
    if scope["type"] == "websocket":  # no websocket routes: close before accepting
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if challenge is not None:
        headers.append((b"www-authenticate", challenge.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
