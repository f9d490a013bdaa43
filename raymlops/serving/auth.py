"""API keys mapped to roles for the serving router (DESIGN §4); keys are stored hashed.

Roles are ordered, ``viewer < predictor < data-scientist < operator < admin`` (one role model with the
CLI and the job: ``raymlops.security.roles``): a key may call every route whose role is at or below
its own. ``ROUTE_ROLES`` says which role each route needs; ``/v2/health/*`` needs none,
and a route it does not list needs ``admin`` (default deny: a new endpoint nobody mapped is never
open by accident; ``tests/unit/test_auth.py`` fails until it is mapped).

A key reads ``rmk_<key_id>_<secret>``. Only ``{key_id: {role, salt, hash, created, name}}`` is kept,
``hash`` being PBKDF2-HMAC-SHA256 of the whole key with a per-key salt (``KeyStore``, a JSON file of
mode 0600). The router receives the public table (hashes and salts, never a key) in ``user_config``
(``AuthTable``) and checks each request in ``ApiKeyMiddleware``; a key verified once is remembered
by its SHA-256 (an LRU), so only a key's first request in a replica pays the ~0.1 s of PBKDF2.

Keys are never logged: messages and log lines carry at most the key id.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raymlops.errors import AuthError, ConfigError, did_you_mean
from raymlops.security.roles import ROLES

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "ITERATIONS",
    "ROLES",
    "ROUTE_ROLES",
    "ApiKeyMiddleware",
    "AuthTable",
    "KeyRecord",
    "KeyStore",
    "has_role",
    "hash_key",
    "parse_key",
    "required_role",
    "router_auth",
    "verify_key",
]

logger = logging.getLogger(__name__)

_RANK = {role: rank for rank, role in enumerate(ROLES)}
OPEN = None  # the "role" of a route anyone may call
# (method, path pattern as FastAPI writes it) -> the lowest role that may call it, or OPEN.
# HEAD is checked as GET. A route not listed here needs ``_UNLISTED``.
ROUTE_ROLES: dict[tuple[str, str], str | None] = {
    ("GET", "/v2/health/live"): OPEN,
    ("GET", "/v2/health/ready"): OPEN,
    ("GET", "/v1/models"): "viewer",
    ("GET", "/v1/models/{name}/stats"): "viewer",
    ("GET", "/v2"): "viewer",
    ("GET", "/v2/models/{name}"): "viewer",
    ("GET", "/v2/models/{name}/ready"): "viewer",
    ("GET", "/v2/models/{name}/versions/{version}"): "viewer",
    ("GET", "/v2/models/{name}/versions/{version}/ready"): "viewer",
    # FastAPI's own pages: the schema names every endpoint, so not anonymous either.
    ("GET", "/openapi.json"): "viewer",
    ("GET", "/docs"): "viewer",
    ("GET", "/docs/oauth2-redirect"): "viewer",
    ("GET", "/redoc"): "viewer",
    ("POST", "/v1/models/{name}/predict"): "predictor",
    ("POST", "/v1/models/{name}/explain"): "predictor",
    ("POST", "/v2/models/{name}/infer"): "predictor",
    ("POST", "/v2/models/{name}/versions/{version}/infer"): "predictor",
    ("POST", "/v1/feedback"): "predictor",
}
_UNLISTED = "admin"

KEY_PREFIX = "rmk"
ITERATIONS = 200_000  # PBKDF2 rounds: ~0.12 s on a 2-core VM; the secret itself carries 256 bits
_ALGORITHM = "pbkdf2_sha256"
_KEY_ID = re.compile(r"[0-9a-f]{12}")
_KEY = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{16,128}})")
_HASH = re.compile(rf"{_ALGORITHM}\$(\d+)\$([0-9a-f]{{64}})")
_SALT = re.compile(r"[0-9a-f]{32,128}")
_PARAM = re.compile(r"\{[^}/]+\}")
_HINT = "create one with `python -m raymlops serve keys add NAME --role ROLE`"


def _pattern(path: str) -> re.Pattern[str]:
    """FastAPI's ``{param}`` matches one path segment, as it does here."""
    parts = _PARAM.split(path)
    return re.compile("[^/]+".join(re.escape(p) for p in parts) + r"\Z")


_COMPILED = [(method, _pattern(path), role) for (method, path), role in ROUTE_ROLES.items()]


def _lookup(method: str, path: str) -> tuple[bool, str | None]:
    method = "GET" if method == "HEAD" else method
    for listed, pattern, role in _COMPILED:
        if listed == method and pattern.match(path):
            return True, role
    return False, _UNLISTED


def required_role(method: str, path: str) -> str | None:
    """The lowest role that may call ``method path`` (``None``: anyone); unlisted routes need admin."""
    return _lookup(method, path)[1]


def has_role(role: str, needed: str) -> bool:
    """Whether a key with ``role`` may do what ``needed`` may (roles are ordered)."""
    return _RANK[role] >= _RANK[needed]


def _check_role(role: Any, key: str = "serve.auth.role") -> str:
    if role not in _RANK:
        raise ConfigError(key, f"{role!r} is not a role." + did_you_mean(str(role), ROLES))
    return str(role)


# ---------------------------------------------------------------- hashing


def parse_key(key: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed ``rmk_<key_id>_<secret>``, else ``None``."""
    match = _KEY.fullmatch(key)
    return (match.group(1), match.group(2)) if match else None


def hash_key(key: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    """``pbkdf2_sha256$<iterations>$<hex digest>`` of the whole key (its id included)."""
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations)
    return f"{_ALGORITHM}${iterations}${digest.hex()}"


def verify_key(key: str, salt_hex: str, stored: str) -> bool:
    """Whether ``key`` hashes to ``stored`` under ``salt_hex``; constant time in the comparison."""
    match = _HASH.fullmatch(stored)
    if match is None:
        return False
    computed = hash_key(key, bytes.fromhex(salt_hex), int(match.group(1)))
    return hmac.compare_digest(computed, stored)


# ---------------------------------------------------------------- the router's table


@dataclass(frozen=True)
class KeyRecord:
    """What the router knows of one key: never the key itself."""

    key_id: str
    role: str
    salt: str  # hex
    hash: str  # pbkdf2_sha256$<iterations>$<hex>
    name: str = ""

    def __post_init__(self) -> None:
        where = f"serve.auth.keys[{self.key_id!r}]"
        if not isinstance(self.key_id, str) or not _KEY_ID.fullmatch(self.key_id):
            raise ConfigError(where, "a key id is 12 lowercase hex digits.")
        _check_role(self.role, f"{where}.role")
        if not isinstance(self.salt, str) or not _SALT.fullmatch(self.salt):
            raise ConfigError(f"{where}.salt", "must be 16 to 64 bytes in lowercase hex.")
        match = _HASH.fullmatch(self.hash) if isinstance(self.hash, str) else None
        if match is None or int(match.group(1)) < 100_000:
            raise ConfigError(
                f"{where}.hash", f"must read {_ALGORITHM}$<iterations >= 100000>$<64 hex digits>."
            )
        if not isinstance(self.name, str):
            raise ConfigError(f"{where}.name", f"must be a string, got {self.name!r}.")

    def public(self) -> dict[str, str]:
        return {"role": self.role, "salt": self.salt, "hash": self.hash, "name": self.name}


@dataclass(frozen=True)
class AuthTable:
    """The router's ``user_config["auth"]``: ``{"enabled": bool, "keys": {key_id: {...}}}``.

    A key's record is ``{role, salt, hash, name}`` (``KeyRecord``). Validated the same way on the
    driver (``build_user_config``) and in the replica.
    """

    enabled: bool = False
    keys: Mapping[str, KeyRecord] = field(default_factory=dict)
    audit_log: str | None = None  # refusals are audit records here (security.audit_log)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AuthTable:
        if data is None:
            return cls()
        if isinstance(data, AuthTable):
            return data
        if not isinstance(data, Mapping):
            raise ConfigError("serve.auth", f"must be a mapping with 'enabled' and 'keys', got {data!r}.")
        unknown = sorted(set(data) - {"enabled", "keys", "audit_log"})
        if unknown:
            raise ConfigError(
                f"serve.auth.{unknown[0]}", "is not an auth setting.", ("enabled", "keys", "audit_log")
            )
        audit_log = data.get("audit_log")
        if audit_log is not None and not isinstance(audit_log, str):
            raise ConfigError("serve.auth.audit_log", f"must be a path or null, got {audit_log!r}.")
        enabled = data.get("enabled", False)
        if not isinstance(enabled, bool):
            raise ConfigError("serve.auth.enabled", f"must be true or false, got {enabled!r}.")
        raw = data.get("keys") or {}
        if not isinstance(raw, Mapping):
            raise ConfigError("serve.auth.keys", f"must map key id -> record, got {type(raw).__name__}.")
        keys = {}
        for key_id, record in raw.items():
            if not isinstance(record, Mapping):
                raise ConfigError(f"serve.auth.keys[{key_id!r}]", "must be a mapping.")
            extra = sorted(set(record) - {"role", "salt", "hash", "name", "created"})
            if extra:
                raise ConfigError(
                    f"serve.auth.keys[{key_id!r}].{extra[0]}",
                    "is not a key field (never put a plaintext key here).",
                    ("role", "salt", "hash", "name"),
                )
            missing = [f for f in ("role", "salt", "hash") if f not in record]
            if missing:
                raise ConfigError(f"serve.auth.keys[{key_id!r}]", f"misses {', '.join(missing)}.")
            keys[key_id] = KeyRecord(
                key_id, record["role"], record["salt"], record["hash"], record.get("name", "")
            )
        return cls(enabled, keys, audit_log)

    def to_dict(self) -> dict[str, Any]:
        keys = {k: r.public() for k, r in self.keys.items()}
        table: dict[str, Any] = {"enabled": self.enabled, "keys": keys}
        return table | ({"audit_log": self.audit_log} if self.audit_log else {})


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


def _route_path(scope: Scope) -> str:
    """The path the app routes on: without the application's route prefix (``root_path``)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        return path[len(root) :] or "/"
    return path


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
        method, path = scope.get("method", "GET"), _route_path(scope)
        listed, needed = _lookup(method, path)
        if needed is OPEN:
            await self.app(scope, receive, send)
            return
        key = _presented_key(scope["headers"])
        if key is None:
            await _answer(
                scope,
                send,
                401,
                f"missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>' ({_HINT}).",
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
                f"invalid API key ({what}): unknown or revoked; {_HINT}.",
                challenge='Bearer realm="raymlops", error="invalid_token"',
            )
            return
        if not has_role(record.role, needed):
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


# ---------------------------------------------------------------- the key file


@dataclass(frozen=True)
class KeyInfo:
    """A key as ``KeyStore.list`` shows it: no secret, no hash."""

    key_id: str
    name: str
    role: str
    created: str  # ISO 8601, UTC


class KeyStore:
    """The API keys, hashed, in one JSON file (mode 0600) written atomically under a lock.

    The file holds ``{key_id: {"role", "salt", "hash", "created", "name"}}``; a revoked key is
    removed from it. Running routers see a change on their next ``deploy(..., auth=...)``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def create(self, name: str, role: str) -> str:
        """Add a key; returns it in plain text, the only time it exists anywhere."""
        role = _check_role(role)
        if not isinstance(name, str) or not name.strip() or len(name) > 100 or not name.isprintable():
            raise ConfigError("serve.auth key name", f"must be 1 to 100 printable characters, got {name!r}.")
        with self._locked():
            keys = self._read()
            key_id = secrets.token_hex(6)
            while key_id in keys:
                key_id = secrets.token_hex(6)
            key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            salt = secrets.token_bytes(16)
            keys[key_id] = {
                "role": role,
                "salt": salt.hex(),
                "hash": hash_key(key, salt),
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
                "name": name.strip(),
            }
            self._write(keys)
        logger.info("api key created key_id=%s name=%s role=%s", key_id, name, role)
        return key

    def revoke(self, key_id: str) -> KeyInfo:
        """Remove a key; returns what it was."""
        with self._locked():
            keys = self._read()
            if key_id not in keys:
                raise AuthError(
                    f"No API key {key_id!r} in {self.path}." + (did_you_mean(key_id, keys) if keys else "")
                )
            record = keys.pop(key_id)
            self._write(keys)
        logger.info("api key revoked key_id=%s name=%s", key_id, record.get("name", ""))
        return KeyInfo(key_id, record.get("name", ""), record["role"], record.get("created", ""))

    def set_role(self, key_id: str, role: str) -> KeyInfo:
        """Change a key's role (its secret stays valid); returns what it was."""
        role = _check_role(role)
        with self._locked():
            keys = self._read()
            if key_id not in keys:
                raise AuthError(
                    f"No API key {key_id!r} in {self.path}." + (did_you_mean(key_id, keys) if keys else "")
                )
            record = keys[key_id]
            before = KeyInfo(key_id, record.get("name", ""), record["role"], record.get("created", ""))
            record["role"] = role
            self._write(keys)
        logger.info("api key role changed key_id=%s %s -> %s", key_id, before.role, role)
        return before

    def list(self) -> builtins.list[KeyInfo]:
        """Every key, oldest first: ids, names, roles and creation times; never secrets or hashes."""
        keys = self._read()
        infos = [KeyInfo(k, r.get("name", ""), r["role"], r.get("created", "")) for k, r in keys.items()]
        return sorted(infos, key=lambda i: (i.created, i.key_id))

    def public_table(self) -> dict[str, dict[str, str]]:
        """``{key_id: {role, salt, hash, name}}``: what the router receives (``AuthTable.keys``)."""
        return {
            k: KeyRecord(k, r["role"], r["salt"], r["hash"], r.get("name", "")).public()
            for k, r in self._read().items()
        }

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            logger.warning("api key file readable by others path=%s mode=%o: chmod 600 it", self.path, mode)
        try:
            keys = json.loads(text)
        except json.JSONDecodeError as exc:
            raise AuthError(
                f"API key file {self.path} is not valid JSON ({exc}); restore it from a backup."
            ) from None
        if not isinstance(keys, dict) or not all(
            isinstance(r, dict) and r.get("role") in _RANK and "salt" in r and "hash" in r
            for r in keys.values()
        ):
            raise AuthError(
                f"API key file {self.path} is not a raymlops key file "
                "({key_id: {role, salt, hash, created, name}}); restore it from a backup."
            )
        return keys

    def _write(self, keys: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600 before anything is written; replace() makes the swap atomic.
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(keys, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _locked(self, timeout_s: float = 30.0) -> Iterator[None]:
        """Concurrent ``keys add`` / ``revoke`` take turns (read-modify-write of one file)."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        deadline = time.monotonic() + timeout_s
        with open(os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)) as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise AuthError(
                            f"{lock} was held for more than {timeout_s:.0f} s by another process."
                        ) from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def router_auth(enabled: bool, keys_file: str | Path, audit_log: str | Path | None = None) -> dict[str, Any]:
    """``deploy(auth=...)`` from the ``serve.auth`` config: the key file's public table when enabled.

    Raises:
        ConfigError: Auth is enabled and the key file holds no key (every route but health would be
            refused).
    """
    audit = {"audit_log": str(audit_log)} if audit_log else {}
    if not enabled:
        return {"enabled": False, "keys": {}} | audit
    keys = KeyStore(keys_file).public_table()
    if not keys:
        raise ConfigError(
            "serve.auth.keys_file",
            f"{keys_file} holds no API key while serve.auth.enabled is true: {_HINT} "
            "(with the job's overrides), or set serve.auth.enabled=false.",
        )
    return {"enabled": True, "keys": keys} | audit
