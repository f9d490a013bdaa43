"""API keys: their hashing, the key file, and the public table the serving router checks (DESIGN §4).

A key reads ``rmk_<key_id>_<secret>``. Only ``{key_id: {role, salt, hash, created, name}}`` is kept,
``hash`` being PBKDF2-HMAC-SHA256 of the whole key with a per-key salt (``KeyStore``, a JSON file of
mode 0600). The router receives the public table (hashes and salts, never a key) in ``user_config``
(``AuthTable``); the CLI and the job verify ``$RAYMLOPS_API_KEY`` against the same file
(``raymlops.security.roles``). Roles and their order are ``raymlops.security.roles.ROLES``.

Keys are never logged: messages and log lines carry at most the key id.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raymlops.errors import AuthError, ConfigError, did_you_mean
from raymlops.security.role_ranks import ROLES, check_role_name

__all__ = [
    "ITERATIONS",
    "KEY_HINT",
    "AuthTable",
    "KeyInfo",
    "KeyRecord",
    "KeyStore",
    "hash_key",
    "parse_key",
    "router_auth",
    "verify_key",
]

logger = logging.getLogger(__name__)

KEY_PREFIX = "rmk"
ITERATIONS = 200_000  # PBKDF2 rounds: ~0.12 s on a 2-core VM; the secret itself carries 256 bits
_ALGORITHM = "pbkdf2_sha256"
_KEY_ID = re.compile(r"[0-9a-f]{12}")
_KEY = re.compile(rf"{KEY_PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{16,128}})")
_HASH = re.compile(rf"{_ALGORITHM}\$(\d+)\$([0-9a-f]{{64}})")
_SALT = re.compile(r"[0-9a-f]{32,128}")
KEY_HINT = "create one with `python -m raymlops serve keys add NAME --role ROLE`"


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
        check_role_name(self.role, f"{where}.role")
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
        role = check_role_name(role, "serve.auth.role")
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
        role = check_role_name(role, "serve.auth.role")
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
            isinstance(r, dict) and r.get("role") in ROLES and "salt" in r and "hash" in r
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
        import filelock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            with filelock.FileLock(lock, timeout=timeout_s, mode=0o600, poll_interval=0.02):
                yield
        except filelock.Timeout:
            raise AuthError(f"{lock} was held for more than {timeout_s:.0f} s by another process.") from None


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
            f"{keys_file} holds no API key while serve.auth.enabled is true: {KEY_HINT} "
            "(with the job's overrides), or set serve.auth.enabled=false.",
        )
    return {"enabled": True, "keys": keys} | audit
