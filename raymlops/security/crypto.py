"""Encryption at rest: envelope encryption with AES-256-GCM.

Each file gets its own random 256-bit data key (DEK). The file's bytes are encrypted with the DEK;
the DEK is *wrapped* (itself encrypted) by a key-encryption key (KEK) and stored, wrapped, in the
file's header. Rotating the KEK therefore re-wraps a few dozen header bytes per file and never
touches the data: :func:`rewrap` rewrites the header and leaves the ciphertext bytes as they were.

File layout (``MAGIC`` + a 4-byte big-endian header length + the JSON header + the ciphertext)::

    RMLENC1\\n  <len>  {"v": 1, "alg": "AES-256-GCM", "kek_id": "k2", "wrapped_dek": "<b64>",
                        "nonce": "<b64>", "aad": "<b64>"}  <AES-GCM ciphertext + 16-byte tag>

``aad`` (authenticated, not secret) binds the format version; the wrapped DEK is AES-GCM under the
KEK with the KEK's id as its associated data, so a header cannot be moved to another KEK's name.
A file that does not start with ``MAGIC`` is plaintext: :func:`read_maybe_encrypted` passes it
through, so state written before encryption was turned on keeps working.

Where the keys come from (:meth:`Keyring.from_settings`): ``security.encryption.kek_file`` (a file
of mode 0600) if set, else the environment variable named by ``security.encryption.kek_env``
(default ``RAYMLOPS_KEK``). Both hold one KEK per line (the variable may also separate them with
``,``)::

    # key id : 32 random bytes, base64
    # (python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())")
    k2:q1Kx...=
    k1:Zp0f...=

The first KEK is the current one: it wraps every new DEK. The others only unwrap (files not yet
re-wrapped). Rotation: put the new KEK first, keep the old ones, run
``python -m raymlops security rotate-kek``, then remove the old lines.

A key management service plugs in behind :class:`KeyEncryptionKey`: its ``wrap``/``unwrap`` call the
service (the KEK never leaves it) and a :class:`Keyring` holds it like a local key.

Serving replicas get the keyring through the Ray cluster's internal key-value store
(:func:`publish_keyring` / :func:`fetch_keyring`), like the PII key (:mod:`raymlops.security.pii`):
never through ``user_config`` or a ``runtime_env`` variable, which Ray writes to its logs.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
import stat
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from raymlops.errors import ConfigError, IntegrityError
from raymlops.security.names import safe_name

__all__ = [
    "MAGIC",
    "KeyEncryptionKey",
    "Keyring",
    "LocalKek",
    "active_keyring",
    "cluster_keyring",
    "configure",
    "decrypt_bytes",
    "default_keyring",
    "encrypt_bytes",
    "fetch_keyring",
    "is_encrypted",
    "keyring_for",
    "publish_keyring",
    "read_header",
    "read_maybe_encrypted",
    "rewrap",
    "rotate_tree",
    "unpublish_keyring",
    "write_encrypted",
    "write_sensitive",
]

MAGIC = b"RMLENC1\n"
FORMAT_VERSION = 1
_ALG = "AES-256-GCM"
_AAD = b"raymlops encrypted file v1"
_LEN = struct.Struct(">I")
_KEY_BYTES = 32
_NONCE_BYTES = 12
_MAX_HEADER = 64 * 1024  # a header is ~250 bytes; anything larger is not ours
_KV_NAMESPACE = "raymlops"
_ACTIVE_KV = "kek:active"  # JSON list of the KEK ids that encrypt in this cluster (current first)
_KEY_HELP = (
    "KEKs are looked up in security.encryption.kek_file (when set) or else in the environment "
    "variable security.encryption.kek_env (default RAYMLOPS_KEK); a replica gets them from the Ray "
    "cluster's key-value store, put there at deploy time"
)


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """A key that wraps and unwraps data keys. A KMS client implements the same three members."""

    @property
    def key_id(self) -> str: ...

    def wrap(self, dek: bytes) -> bytes: ...

    def unwrap(self, wrapped: bytes) -> bytes: ...


@dataclass(frozen=True)
class LocalKek:
    """A 256-bit KEK held in this process: wraps with AES-256-GCM (random nonce, key id as AAD)."""

    key_id: str
    key: bytes = field(repr=False)  # repr=False: never in a log line or an error message

    def __post_init__(self) -> None:
        safe_name(self.key_id, "KEK id")
        if len(self.key) != _KEY_BYTES:
            raise ConfigError(
                "security.encryption.kek_file",
                f"KEK {self.key_id!r} is {len(self.key)} bytes; a KEK is 32 random bytes, base64-encoded.",
            )

    def wrap(self, dek: bytes) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, dek, self.key_id.encode())

    def unwrap(self, wrapped: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            return AESGCM(self.key).decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], self.key_id.encode()
            )
        except InvalidTag:
            raise ConfigError(
                "security.encryption.kek_file",
                f"KEK {self.key_id!r} does not unwrap this file's data key: the key under that id is not "
                f"the one the file was written with (replaced?), or the file's header was altered. "
                f"{_KEY_HELP}.",
            ) from None


class Keyring:
    """KEKs by id; the first is current (wraps new data keys), the others only unwrap."""

    def __init__(self, keks: Iterable[KeyEncryptionKey], *, source: str = "") -> None:
        self.keks: dict[str, KeyEncryptionKey] = {}
        for kek in keks:
            if kek.key_id in self.keks:
                raise ConfigError("security.encryption.kek_file", f"KEK id {kek.key_id!r} appears twice.")
            self.keks[kek.key_id] = kek
        if not self.keks:
            raise ConfigError("security.encryption.kek_file", f"no KEK found. {_KEY_HELP}.")
        self.source = source  # where the keys came from, for messages ("file /x", "$RAYMLOPS_KEK")

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self.keks)}, source={self.source!r})"

    @property
    def current(self) -> KeyEncryptionKey:
        return next(iter(self.keks.values()))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.keks)

    def get(self, key_id: str, where: str = "") -> KeyEncryptionKey:
        kek = self.keks.get(key_id)
        if kek is None:
            at = f" ({where})" if where else ""
            raise ConfigError(
                "security.encryption.kek_file",
                f"the file{at} was encrypted under KEK {key_id!r}, which the keyring from "
                f"{self.source or 'the caller'} does not hold (it holds {', '.join(self.keks)}). "
                f"{_KEY_HELP}; "
                "keep an old KEK after the new one until `python -m raymlops security rotate-kek` has run.",
            )
        return kek

    @classmethod
    def parse(cls, text: str, source: str) -> Keyring:
        """KEKs from ``id:base64`` entries, one a line (or ``,``-separated); ``#`` starts a comment."""
        keks = []
        for raw in text.replace(",", "\n").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            key_id, sep, encoded = line.partition(":")
            try:
                key = base64.b64decode(encoded.strip(), validate=True) if sep else b""
            except binascii.Error:
                key = b""
            if not sep or len(key) != _KEY_BYTES:
                raise ConfigError(
                    "security.encryption.kek_file",
                    f"{source}: entry {key_id.strip()[:32]!r} is not 'ID:BASE64' of 32 bytes; write one "
                    "'id:base64-of-32-random-bytes' a line, the current KEK first.",
                )
            keks.append(LocalKek(key_id.strip(), key))
        return cls(keks, source=source)

    @classmethod
    def from_settings(cls, kek_file: str | None = None, kek_env: str = "RAYMLOPS_KEK") -> Keyring:
        """The keyring of ``security.encryption`` (see the module docstring for the format).

        Raises:
            ConfigError: no keys there, a malformed entry, or a key file that others may read.
        """
        if kek_file:
            path = Path(kek_file).expanduser()
            try:
                mode = stat.S_IMODE(path.stat().st_mode)
            except FileNotFoundError:
                raise ConfigError(
                    "security.encryption.kek_file", f"{path} does not exist. {_KEY_HELP}."
                ) from None
            if mode & 0o077:
                raise ConfigError(
                    "security.encryption.kek_file",
                    f"{path} has mode {oct(mode)}: others may read the KEKs. Run `chmod 600 {path}`.",
                )
            return cls.parse(path.read_text(), f"file {path}")
        text = os.environ.get(kek_env, "")
        if not text.strip():
            raise ConfigError(
                "security.encryption.kek_env",
                f"encryption is on but ${kek_env} is empty and security.encryption.kek_file is not set. "
                f"{_KEY_HELP}.",
            )
        return cls.parse(text, f"${kek_env}")

    @classmethod
    def from_config(cls, cfg: Any) -> Keyring | None:
        """The keyring of a job config (``cfg.security.encryption``), or None when encryption is off."""
        enc = cfg.security.encryption
        if not enc.enabled:
            return None
        return cls.from_settings(enc.kek_file, str(enc.kek_env))


# ------------------------------------------------------------------------------- the file format


def encrypt_bytes(data: bytes, keyring: Keyring) -> bytes:
    """``data`` as an encrypted file's bytes, its fresh DEK wrapped by the keyring's current KEK."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    dek = AESGCM.generate_key(bit_length=256)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    ciphertext = AESGCM(dek).encrypt(nonce, data, _AAD)
    kek = keyring.current
    return _header_bytes(kek.key_id, kek.wrap(dek), nonce) + ciphertext


def _header_bytes(kek_id: str, wrapped: bytes, nonce: bytes) -> bytes:
    header = {
        "v": FORMAT_VERSION,
        "alg": _ALG,
        "kek_id": kek_id,
        "wrapped_dek": base64.b64encode(wrapped).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "aad": base64.b64encode(_AAD).decode(),
    }
    encoded = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _LEN.pack(len(encoded)) + encoded


def is_encrypted(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def read_header(data: bytes, where: str = "") -> tuple[dict[str, Any], int]:
    """The JSON header of an encrypted file's bytes and the offset where its ciphertext starts."""
    start = len(MAGIC) + _LEN.size
    if not is_encrypted(data) or len(data) < start:
        raise IntegrityError(f"{where or 'the data'} is not a raymlops encrypted file (no {MAGIC!r} header).")
    (length,) = _LEN.unpack_from(data, len(MAGIC))
    try:
        if length > _MAX_HEADER:
            raise ValueError(f"header length {length}")
        header = json.loads(data[start : start + length])
        if header.get("v") != FORMAT_VERSION or header.get("alg") != _ALG:
            raise ValueError(f"format {header.get('v')!r}/{header.get('alg')!r}")
        for name in ("kek_id", "wrapped_dek", "nonce", "aad"):
            if not isinstance(header.get(name), str):
                raise ValueError(f"no {name}")
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{where or 'the data'}: the encryption header is damaged ({exc}).") from None
    return header, start + length


def decrypt_bytes(data: bytes, keyring: Keyring, where: str = "") -> bytes:
    """The plaintext of an encrypted file's bytes.

    Raises:
        ConfigError: the keyring lacks the file's KEK, or that KEK does not unwrap its data key.
        IntegrityError: the header or the ciphertext was altered (AES-GCM's tag does not verify).
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    header, offset = read_header(data, where)
    kek = keyring.get(header["kek_id"], where)
    dek = kek.unwrap(base64.b64decode(header["wrapped_dek"]))
    try:
        return AESGCM(dek).decrypt(
            base64.b64decode(header["nonce"]), data[offset:], base64.b64decode(header["aad"])
        )
    except InvalidTag:
        raise IntegrityError(
            f"{where or 'the data'}: the encrypted bytes do not authenticate (AES-GCM tag mismatch): "
            "the file was altered or damaged after it was written."
        ) from None


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def write_encrypted(path: str | os.PathLike[str], data: bytes, keyring: Keyring) -> Path:
    """Write ``data`` encrypted to ``path`` (atomically, mode 0600)."""
    path = Path(path)
    _atomic_write(path, encrypt_bytes(data, keyring))
    return path


def read_maybe_encrypted(path: str | os.PathLike[str], keyring: Keyring | None = None) -> bytes:
    """The plaintext of ``path``: decrypted when it is an encrypted file, else its bytes as they are.

    ``keyring`` None: the process's keyring (:func:`configure`), else the environment's
    (``$RAYMLOPS_KEK``), else the Ray cluster's (:func:`fetch_keyring`, in a serving replica).
    """
    data = Path(path).read_bytes()
    if not is_encrypted(data):
        return data
    return decrypt_bytes(data, keyring or keyring_for(data, str(path)), str(path))


def rewrap(path: str | os.PathLike[str], keyring: Keyring) -> bool:
    """Re-wrap ``path``'s data key under the keyring's current KEK; the ciphertext bytes stay as they are.

    Returns False (and writes nothing) for a plaintext file or one already under the current KEK.
    """
    path = Path(path)
    data = path.read_bytes()
    if not is_encrypted(data):
        return False
    header, offset = read_header(data, str(path))
    current = keyring.current
    if header["kek_id"] == current.key_id:
        return False
    dek = keyring.get(header["kek_id"], str(path)).unwrap(base64.b64decode(header["wrapped_dek"]))
    nonce = base64.b64decode(header["nonce"])
    _atomic_write(path, _header_bytes(current.key_id, current.wrap(dek), nonce) + data[offset:])
    return True


def rotate_tree(
    roots: Iterable[str | os.PathLike[str]],
    keyring: Keyring,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, int]:
    """:func:`rewrap` every encrypted file under ``roots``; counts of files ``rewrapped``, ``current``
    (already under the current KEK) and ``plaintext`` (of which only the first 8 bytes are read).
    ``progress`` is called with (files looked at, None) after each file."""
    counts = {"rewrapped": 0, "current": 0, "plaintext": 0}
    for root in roots:
        root = Path(root)
        files = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())
        for path in files:
            with path.open("rb") as handle:
                head = handle.read(len(MAGIC))
            if head != MAGIC:
                counts["plaintext"] += 1
            elif rewrap(path, keyring):
                counts["rewrapped"] += 1
            else:
                counts["current"] += 1
            if progress is not None:
                progress(sum(counts.values()), None)
    return counts


# ------------------------------------------------------------ the process's keyring; the cluster's

_ACTIVE: Keyring | None = None


def configure(keyring: Keyring | None) -> None:
    """Make ``keyring`` this process's: :func:`write_sensitive` encrypts with it, readers decrypt with it.

    The job calls it with :meth:`Keyring.from_config` (None: encryption off, files written as plaintext).
    """
    global _ACTIVE
    _ACTIVE = keyring


def active_keyring() -> Keyring | None:
    return _ACTIVE


def write_sensitive(path: str | os.PathLike[str], data: bytes | str, keyring: Keyring | None = None) -> Path:
    """Write a file that may hold feature values: encrypted when a keyring is given or configured,
    else plaintext exactly as ``Path.write_bytes`` would (the default path costs nothing extra)."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    keyring = keyring or _ACTIVE
    if keyring is None:
        path.write_bytes(raw)
        return path
    return write_encrypted(path, raw, keyring)


def _kv_name(key_id: str) -> str:
    return f"kek:{key_id}"


def publish_keyring(keyring: Keyring) -> tuple[str, ...]:
    """Put the keyring's local KEKs into the connected Ray cluster's key-value store (for replicas).

    Only :class:`LocalKek` entries are copied; a KMS-backed KEK is reached by the replica itself.
    """
    import ray
    from ray.experimental import internal_kv

    if not ray.is_initialized():
        ray.init()
    for kek in keyring.keks.values():
        if isinstance(kek, LocalKek):
            internal_kv._internal_kv_put(
                _kv_name(kek.key_id), kek.key, overwrite=True, namespace=_KV_NAMESPACE
            )
    # Which KEKs encrypt in this cluster: a replica's prediction log (ParquetLog) encrypts with them.
    ids = json.dumps(list(keyring.ids)).encode()
    internal_kv._internal_kv_put(_ACTIVE_KV, ids, overwrite=True, namespace=_KV_NAMESPACE)
    return keyring.ids


def unpublish_keyring() -> None:
    """Encryption is off for this cluster from now on: new prediction log files are written in the clear
    (the KEKs stay in the store, so that files written before still decrypt)."""
    if not _in_cluster():
        return  # no cluster connected: none holds a flag to withdraw (a new one starts without)
    from ray.experimental import internal_kv

    internal_kv._internal_kv_del(_ACTIVE_KV, namespace=_KV_NAMESPACE)


def cluster_keyring() -> Keyring | None:
    """The keyring the deploying process published (:func:`publish_keyring`), in a process of a Ray
    cluster; None outside one (Ray not even imported: nothing is imported here) or when none is."""
    if not _in_cluster():
        return None
    from ray.experimental import internal_kv

    ids = internal_kv._internal_kv_get(_ACTIVE_KV, namespace=_KV_NAMESPACE)
    return fetch_keyring(json.loads(ids)) if ids else None


def default_keyring() -> Keyring | None:
    """What a writer encrypts with when given no keyring: the process's (:func:`configure`), else, in
    a Ray cluster, the one its deploying process published; None: write plaintext."""
    return _ACTIVE if _ACTIVE is not None else cluster_keyring()


def fetch_keyring(key_ids: Iterable[str]) -> Keyring:
    """The KEKs :func:`publish_keyring` stored under ``key_ids`` (in a replica)."""
    from ray.experimental import internal_kv

    keks = []
    for key_id in key_ids:
        key = internal_kv._internal_kv_get(_kv_name(key_id), namespace=_KV_NAMESPACE)
        if key:
            keks.append(LocalKek(key_id, bytes(key)))
    if not keks:
        raise ConfigError(
            "security.encryption.kek_file",
            f"the Ray cluster holds none of the KEKs {list(key_ids)} (it restarted since the deploy?): "
            f"deploy again from a process that has them. {_KEY_HELP}.",
        )
    return Keyring(keks, source="the Ray cluster's key-value store")


def keyring_for(data: bytes, where: str) -> Keyring:
    """The keyring to read the encrypted ``data`` with when the caller gave none: the process's, the
    environment's (``$RAYMLOPS_KEK``), else, inside a Ray cluster, the cluster's (its KEK id's)."""
    if _ACTIVE is not None:
        return _ACTIVE
    env = os.environ.get("RAYMLOPS_KEK", "")
    if env.strip():
        return Keyring.parse(env, "$RAYMLOPS_KEK")
    kek_id = read_header(data, where)[0]["kek_id"]
    unconfigured = f"{where} is encrypted under KEK {kek_id!r} and no keyring is configured"
    if _in_cluster():
        try:
            return fetch_keyring([kek_id])
        except ConfigError as exc:  # say which file first; the cluster's message says why
            raise ConfigError("security.encryption.kek_file", f"{unconfigured}; {exc.problem}") from None
    raise ConfigError("security.encryption.kek_file", f"{unconfigured}. {_KEY_HELP}.")


def _in_cluster() -> bool:
    """Connected to a Ray cluster? Looked up, not imported: a process that never imported Ray is not."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()
