"""Artifact integrity: a SHA-256 digest of every model artifact, recorded in the registry, optionally
signed; checked before serving, evaluation or explanation loads the bytes.

At registration (``stages/register.py``) each file of the version's model folder gets the SHA-256 of
its *plaintext* (so a KEK rotation, which rewrites encrypted files' headers, changes no digest). The
version carries them as the tag ``raymlops.artifact_digests`` (JSON ``{file: sha256}``, explainer files
as ``explainer/<file>``). ``security.signing.mode`` adds a signature over the canonical digest list
(sorted, compact JSON) in the tag ``raymlops.artifact_signature``:

* ``digest``: no signature. Catches corruption and tampering with the artifact store; someone who can
  also write the registry's tags can replace both.
* ``hmac``: ``hmac-sha256:<hex>`` with a shared secret (``key_file`` or ``$<key_env>``). Whoever
  verifies can also sign.
* ``ed25519``: ``ed25519:<base64>`` with the private key in ``key_file`` (PEM); serving needs only the
  public key (``public_key_file``), so a serving host cannot forge a signature.

With ``hmac`` or ``ed25519`` a version without a valid signature is refused; with ``digest`` a version
registered before digests existed (no tag) loads with a warning.

:func:`read_artifact` is the one way model bytes are read: it decrypts (:mod:`raymlops.security.crypto`),
compares the digest, and on a mismatch raises :class:`~raymlops.errors.IntegrityError` naming the file
and both digests, after an ``artifact-refused`` record in the security audit log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raymlops.errors import ConfigError, IntegrityError
from raymlops.registry.tags import DIGESTS_TAG, SIGNATURE_TAG
from raymlops.security.audit import audit_event
from raymlops.security.crypto import Keyring, read_maybe_encrypted

__all__ = [
    "Signer",
    "canonical_digests",
    "digest_bytes",
    "expected_digests",
    "integrity_tags",
    "onnx_digest",
    "read_artifact",
    "registered_artifact",
]

logger = logging.getLogger(__name__)

MODES = ("digest", "hmac", "ed25519")


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_digests(digests: Mapping[str, str]) -> bytes:
    """The bytes a signature covers: the digest list as sorted, compact JSON."""
    return json.dumps(dict(sorted(digests.items())), separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Signer:
    """Signs and verifies digest lists per ``security.signing`` (keys are kept out of ``repr``).

    ``hmac_key``: the shared secret (hmac). ``private_pem``/``public_pem``: the Ed25519 keys; a verifier
    needs only the public key, and a signer without a public key derives it from the private one.
    """

    mode: str = "digest"
    hmac_key: bytes = field(default=b"", repr=False)
    private_pem: bytes = field(default=b"", repr=False)
    public_pem: bytes = b""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError("security.signing.mode", f"{self.mode!r} is not one of {MODES}.", MODES)
        if self.mode == "hmac" and len(self.hmac_key) < 16:
            raise ConfigError(
                "security.signing.key_file",
                "mode hmac needs a secret of at least 16 bytes in security.signing.key_file or "
                "$RAYMLOPS_SIGNING_KEY (security.signing.key_env).",
            )
        if self.mode == "ed25519" and not (self.private_pem or self.public_pem):
            raise ConfigError(
                "security.signing.public_key_file",
                "mode ed25519 needs the public key (PEM) in security.signing.public_key_file to verify, and "
                "the private key (PEM) in security.signing.key_file to sign.",
            )

    @classmethod
    def from_config(cls, signing: Any) -> Signer:
        """From ``cfg.security.signing``; a key missing for the work at hand fails when it is used."""
        mode = str(getattr(signing.mode, "value", signing.mode))
        if mode == "digest":
            return cls()
        key_file = signing.get("key_file") if hasattr(signing, "get") else signing.key_file
        if mode == "hmac":
            secret = Path(key_file).expanduser().read_bytes().strip() if key_file else b""
            secret = secret or os.environ.get(str(signing.key_env), "").encode()
            return cls("hmac", hmac_key=secret)
        public_file = signing.get("public_key_file") if hasattr(signing, "get") else signing.public_key_file
        private = Path(key_file).expanduser().read_bytes() if key_file and Path(key_file).exists() else b""
        public = Path(public_file).expanduser().read_bytes() if public_file else b""
        return cls("ed25519", private_pem=private, public_pem=public)

    def sign(self, digests: Mapping[str, str]) -> str | None:
        """The signature tag's value for ``digests`` (None in ``digest`` mode)."""
        message = canonical_digests(digests)
        if self.mode == "hmac":
            return "hmac-sha256:" + hmac.digest(self.hmac_key, message, "sha256").hex()
        if self.mode == "ed25519":
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            if not self.private_pem:
                raise ConfigError(
                    "security.signing.key_file", "signing with ed25519 needs the private key (PEM) here."
                )
            key = load_pem_private_key(self.private_pem, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ConfigError("security.signing.key_file", "the private key is not an Ed25519 key.")
            return "ed25519:" + base64.b64encode(key.sign(message)).decode()
        return None

    def verify(self, digests: Mapping[str, str], signature: str | None, what: str) -> None:
        """Nothing in ``digest`` mode; else ``IntegrityError`` unless ``signature`` signs ``digests``."""
        if self.mode == "digest":
            return
        message = canonical_digests(digests)
        if not signature:
            raise IntegrityError(
                f"{what} carries no artifact signature (tag {SIGNATURE_TAG}) and security.signing.mode is "
                f"{self.mode}: re-register it with signing on, or it may not be loaded."
            )
        scheme, _, value = signature.partition(":")
        if scheme != {"hmac": "hmac-sha256", "ed25519": "ed25519"}[self.mode]:
            raise IntegrityError(
                f"{what}: its signature is {scheme!r}, security.signing.mode is {self.mode}."
            )
        if self.mode == "hmac":
            good = hmac.compare_digest(hmac.digest(self.hmac_key, message, "sha256").hex(), value)
        else:
            good = self._ed25519_verify(message, value)
        if not good:
            raise IntegrityError(
                f"{what}: the artifact signature does not verify with the configured "
                f"{self.mode} key: the digest list (tag {DIGESTS_TAG}) or the signature was altered, "
                "or it was signed with another key."
            )

    def _ed25519_verify(self, message: bytes, value: str) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

        if self.public_pem:
            public = load_pem_public_key(self.public_pem)
        else:
            private = load_pem_private_key(self.private_pem, password=None)
            if not isinstance(private, Ed25519PrivateKey):
                raise ConfigError("security.signing.key_file", "the private key is not an Ed25519 key.")
            public = private.public_key()
        if not isinstance(public, Ed25519PublicKey):
            raise ConfigError("security.signing.public_key_file", "the public key is not an Ed25519 key.")
        try:
            public.verify(base64.b64decode(value, validate=True), message)
        except (InvalidSignature, ValueError):
            return False
        return True


def integrity_tags(digests: Mapping[str, str], signer: Signer) -> dict[str, str]:
    """The registry tags recording ``digests`` (and their signature when the signer signs)."""
    tags = {DIGESTS_TAG: canonical_digests(digests).decode()}
    signature = signer.sign(digests)
    if signature is not None:
        tags[SIGNATURE_TAG] = signature
    return tags


def expected_digests(tags: Mapping[str, str], signer: Signer, what: str) -> dict[str, str] | None:
    """A version's recorded digests, their signature checked; None for a version registered without
    digests (allowed in ``digest`` mode only, with a warning)."""
    raw = tags.get(DIGESTS_TAG)
    if not raw:
        if signer.mode != "digest":
            signer.verify({}, None, what)  # raises: signing is on and there is nothing signed
        logger.warning("artifact digests missing, loading unchecked what=%s", what)
        return None
    try:
        digests = json.loads(raw)
        if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
            raise ValueError("not a {file: sha256} object")
    except ValueError as exc:
        raise IntegrityError(f"{what}: the tag {DIGESTS_TAG} is damaged ({exc}).") from None
    signer.verify(digests, tags.get(SIGNATURE_TAG), what)
    return digests


def onnx_digest(tags: Mapping[str, str], signer: Signer, what: str, filename: str = "model.onnx") -> str:
    """The recorded digest of a version's ``filename`` ("" for a version registered without digests)."""
    digests = expected_digests(tags, signer, what)
    if digests is None:
        return ""
    if filename not in digests:
        raise IntegrityError(f"{what}: its recorded digests ({DIGESTS_TAG}) list no {filename}.")
    return digests[filename]


def registered_artifact(
    registry: Any,
    version: Any,
    filename: str = "model.onnx",
    *,
    signer: Signer | None = None,
    audit_log: str | os.PathLike[str] | None = None,
) -> bytes:
    """A registered version's artifact (``registry``: ModelRegistry, ``version``: RegisteredVersion),
    decrypted and checked against the version's recorded digest (signature verified by ``signer``)."""
    what = f"{version.name} v{version.version}"
    digest = onnx_digest(version.tags, signer or Signer(), what, filename)
    path = registry.local_artifact(version, filename)
    return read_artifact(path, digest=digest or None, what=what, audit_log=audit_log)


def read_artifact(
    path: str | os.PathLike[str],
    *,
    digest: str | None = None,
    what: str = "",
    keyring: Keyring | None = None,
    audit_log: str | os.PathLike[str] | None = None,
) -> bytes:
    """The plaintext bytes of a model artifact, decrypted if encrypted, checked against ``digest``.

    Args:
        path: The file.
        digest: Its recorded SHA-256 (hex) of the plaintext; None: not checked (legacy versions).
        what: What the file belongs to, for messages and the audit record (``"flights v3"``).
        keyring: Decrypts it; None: see :func:`raymlops.security.crypto.read_maybe_encrypted`.
        audit_log: Where the refusal is recorded; None: ``$RAYMLOPS_AUDIT_LOG`` (if set).

    Raises:
        IntegrityError: the bytes do not match ``digest``, or the encrypted file does not authenticate.
    """
    path = Path(path)
    target = what or str(path)
    try:
        data = read_maybe_encrypted(path, keyring)
    except IntegrityError as exc:
        _refuse(target, path, str(exc), {"file": str(path)}, audit_log)
        raise
    if digest is not None:
        actual = digest_bytes(data)
        if not hmac.compare_digest(actual, digest):
            message = (
                f"{target}: {path} does not match its recorded digest (expected sha256 {digest}, found "
                f"{actual}): the artifact was altered after it was registered. It was not loaded; "
                "restore the file from a trusted copy or register the model again."
            )
            _refuse(
                target, path, message, {"file": str(path), "expected": digest, "actual": actual}, audit_log
            )
            raise IntegrityError(message)
    return data


def _refuse(
    target: str, path: Path, why: str, details: dict[str, Any], audit_log: str | os.PathLike[str] | None
) -> None:
    logger.error("artifact refused target=%s file=%s", target, path)
    try:
        audit_event("artifact-refused", target, "refused", why, details=details, path=audit_log)
    except OSError:  # the refusal itself must still happen when the audit log cannot be written
        logger.exception("could not write the audit record of a refused artifact target=%s", target)
