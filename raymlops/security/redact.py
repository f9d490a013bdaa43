"""Secrets out of what is recorded: a resolved config goes to MLflow (params and ``config.yaml``)
with the values of secret keys replaced.

A resolved config holds what ``${oc.env:...}`` read from the environment (the lakeFS secret access
key, for one) and URLs that may carry a password (``redis://:password@host``). Recording them would
put a secret in the tracking database and the artifact store, readable by everyone who may read
runs. Keys whose last part names a secret (``secret``, ``password``, ``token``, ``api_key``,
``private_key``; not ``*_env`` or ``*_file``, which hold a variable's name or a path) are replaced
by :data:`REDACTED`, and the password of a URL's user info by ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["REDACTED", "redact_config", "redact_url"]

REDACTED = "<redacted>"
_SECRET_KEY = re.compile(r"secret|password|passwd|token|api_key|private_key", re.IGNORECASE)
_NAME_ONLY = re.compile(r"_(env|file|path)$", re.IGNORECASE)  # a variable's name or a file: no secret
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):([^/@\s]+)@")


def redact_url(value: str) -> str:
    """``scheme://user:password@host`` -> ``scheme://user:***@host``; other text unchanged."""
    return _URL_PASSWORD.sub(r"\1:***@", value)


def _secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key)) and not _NAME_ONLY.search(key)


def redact_config(value: Any, key: str = "") -> Any:
    """A copy of a resolved config tree (dicts, lists, scalars) with secret values replaced."""
    if isinstance(value, Mapping):
        return {k: redact_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_config(v, key) for v in value]
    if isinstance(value, str):
        if value and _secret_key(key):
            return REDACTED
        return redact_url(value)
    return value
