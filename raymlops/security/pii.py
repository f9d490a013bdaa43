"""Personal data: columns tagged ``pii: true`` are hashed or dropped before logs and reports.

The data config names them (``data.columns: {tailnum: {pii: true}}``) and says what to do
(``data.pii.action``):

* ``hash``: each value becomes ``HMAC-SHA256(key, text)`` in hex. Deterministic for one key, so a
  subject's rows can still be found (``data erase``), and counts, joins and drift of the hashed
  values still work; without the key the hash cannot be reversed by guessing values (a plain hash
  of a tail number could be: there are only so many).
* ``drop``: the column is removed.

This happens on the logging and reporting side only: the model still takes the column as a feature
(training and scoring see the raw value), and so does everything a request carries. What changes is
what is written down: the prediction log's ``f_<column>``, the validation and drift reports
(observed values, allowed lists, min/max), and the reference profile (``profile.json``, top
categories; a numeric PII column's quantiles are raw values, so its profile is left out).

The key: ``$<data.pii.salt_env>`` (default ``RAYMLOPS_PII_SALT``) when set, else 32 random bytes
kept in ``<state_dir>/pii_salt`` (created mode 0600; refused when others can read it). Serving
replicas get it through the cluster's internal key-value store (GCS), under a name derived from
the key (:func:`publish_key`): not through ``user_config`` or a ``runtime_env`` env var, both of
which Ray writes to its logs and dashboard. The key never appears in an output; :attr:`key_id`
(an HMAC of a fixed text) may, to tell which key a hash was made with.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from raymlops.errors import ConfigError

__all__ = [
    "ACTIONS",
    "DROPPED",
    "PIIMasker",
    "PIIPolicy",
    "fetch_key",
    "hash_text",
    "load_or_create_key",
    "mask_checks",
    "mask_profile",
    "mask_summary",
    "masker_from_settings",
    "publish_key",
]

ACTIONS = ("hash", "drop")
DROPPED = "[pii dropped]"  # what a report shows in place of a dropped column's values
SALT_FILE = "pii_salt"
_KV_NAMESPACE = "raymlops"
_KEY_ID_TEXT = b"raymlops pii key id"


def hash_text(key: bytes, text: str) -> str:
    """``HMAC-SHA256(key, text)`` in hex: what a hashed PII value becomes."""
    return hmac.digest(key, text.encode("utf-8"), "sha256").hex()


def key_id_of(key: bytes) -> str:
    """A short public name of a key (16 hex digits of an HMAC of a fixed text); reveals nothing of it."""
    return hmac.digest(key, _KEY_ID_TEXT, "sha256").hex()[:16]


def load_or_create_key(path: str | os.PathLike[str]) -> bytes:
    """The key kept in ``path`` (hex text), created with 32 random bytes and mode 0600 if absent.

    Raises:
        ConfigError: the file is readable by others (group or world), or does not hold a hex key.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # made earlier (or by a concurrent process: O_EXCL lets exactly one write it)
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(
            "data.pii.salt_env",
            f"the PII key file {path} has mode {oct(mode)}: others may read it. Run `chmod 600 {path}`.",
        )
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError(
            "data.pii.salt_env",
            f"the PII key file {path} does not hold a hex key of at least 16 bytes; delete it to make a "
            "new one (hashes made with the old key will no longer match).",
        )
    return key


@dataclass(frozen=True)
class PIIMasker:
    """Hash or drop the PII columns of a table; columns may carry a prefix (``f_`` in the log).

    Built by :meth:`PIIPolicy.masker` (the key resolved) or in a replica from its settings.
    """

    columns: tuple[str, ...]
    action: str = "hash"
    key: bytes = field(default=b"", repr=False)  # repr=False: never in a log line or an error

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError("data.pii.action", f"must be one of {ACTIONS}, got {self.action!r}.", ACTIONS)
        if self.action == "hash" and self.columns and len(self.key) < 16:  # no PII columns: no key needed
            raise ConfigError("data.pii.salt_env", "hashing PII needs a key of at least 16 bytes.")

    def __bool__(self) -> bool:
        return bool(self.columns)

    def hash_text(self, text: str) -> str:
        return hash_text(self.key, text)

    def hash_array(self, values: pa.Array | pa.ChunkedArray) -> pa.Array:
        """Each value's HMAC hex (nulls stay null). One HMAC per distinct value: the column is
        dictionary-encoded first, so a million rows of 4000 tail numbers cost 4000 HMACs."""
        import pyarrow.compute as pc

        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks else pa.array([], values.type)
        text = values if pa.types.is_string(values.type) else pc.cast(values, pa.string())
        encoded = pc.dictionary_encode(text)
        digests = pa.array([self.hash_text(v) for v in encoded.dictionary.to_pylist()], pa.string())
        return pc.take(digests, encoded.indices)

    def apply(self, table: pa.Table, *, prefix: str = "") -> pa.Table:
        """``table`` with its PII columns (named ``prefix + column``) hashed (as strings) or removed."""
        for column in self.columns:
            name = prefix + column
            if name not in table.column_names:
                continue
            index = table.column_names.index(name)
            if self.action == "drop":
                table = table.remove_column(index)
            else:
                table = table.set_column(index, pa.field(name, pa.string()), self.hash_array(table[name]))
        return table

    def schema(self, schema: pa.Schema, *, prefix: str = "") -> pa.Schema:
        """What :meth:`apply` makes of a table with ``schema``."""
        fields = []
        for f in schema:
            if f.name.startswith(prefix) and f.name[len(prefix) :] in self.columns:
                if self.action == "drop":
                    continue
                f = pa.field(f.name, pa.string(), nullable=True)
            fields.append(f)
        return pa.schema(fields)

    def mask_value(self, value: Any) -> Any:
        """A value shown in a report: hashed (lists element-wise), or :data:`DROPPED`."""
        if self.action == "drop":
            return DROPPED
        if isinstance(value, list | tuple):
            return [self.mask_value(v) for v in value]
        return None if value is None else self.hash_text(_text(value))

    def to_settings(self, key_id: str) -> dict[str, Any]:
        """What a replica is told: columns, action and the key's id, never the key."""
        return {"columns": list(self.columns), "action": self.action, "key_id": key_id}


def _text(value: Any) -> str:
    """A value's text as Arrow's cast to string writes it, so a report's hash equals the log's."""
    if isinstance(value, str):
        return value
    import pyarrow.compute as pc

    return str(pc.cast(pa.array([value]), pa.string())[0].as_py())


@dataclass(frozen=True)
class PIIPolicy:
    """``data.columns`` tags and ``data.pii`` of one config: which columns, what to do, which key."""

    columns: tuple[str, ...] = ()
    action: str = "hash"
    entity_columns: tuple[str, ...] = ()
    salt_env: str = "RAYMLOPS_PII_SALT"
    salt_file: Path | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> PIIPolicy:
        """From a composed job config (``cfg.data`` and ``cfg.state_dir``)."""
        data = cfg.data
        columns = tuple(sorted(str(name) for name, tags in (data.columns or {}).items() if tags.pii))
        action = getattr(data.pii.action, "value", data.pii.action)
        if action not in ACTIONS:
            raise ConfigError("data.pii.action", f"must be one of {ACTIONS}, got {action!r}.", ACTIONS)
        return cls(
            columns=columns,
            action=str(action),
            entity_columns=tuple(str(c) for c in data.pii.entity_columns),
            salt_env=str(data.pii.salt_env),
            salt_file=Path(str(cfg.state_dir)) / SALT_FILE,
        )

    def key(self) -> bytes:
        """``$salt_env`` when set (its UTF-8 bytes), else the key file (made on first use)."""
        value = os.environ.get(self.salt_env)
        if value:
            if len(value.encode("utf-8")) < 16:
                raise ConfigError(
                    "data.pii.salt_env",
                    f"${self.salt_env} is shorter than 16 bytes; use a long random value "
                    "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`).",
                )
            return value.encode("utf-8")
        if self.salt_file is None:
            raise ConfigError("data.pii.salt_env", f"${self.salt_env} is unset and no state_dir keeps a key.")
        return load_or_create_key(self.salt_file)

    def masker(self) -> PIIMasker:
        """The masker of this policy (reads or makes the key only when hashing)."""
        key = self.key() if self.columns and self.action == "hash" else b""
        return PIIMasker(self.columns, self.action, key)

    def router_settings(self) -> dict[str, Any] | None:
        """The router's ``prediction_log.pii`` settings (None without PII columns); the key is
        published to the cluster's key-value store for the replicas (:func:`publish_key`)."""
        if not self.columns:
            return None
        masker = self.masker()
        key_id = publish_key(masker.key) if masker.action == "hash" else ""
        return masker.to_settings(key_id)


def _kv_name(key_id: str) -> str:
    return f"pii-key/{key_id}"


def publish_key(key: bytes) -> str:
    """Put ``key`` into the connected Ray cluster's internal key-value store; returns its id.

    Why not an env var in ``runtime_env``: Ray's runtime-env agent logs the whole runtime env
    (``runtime_env_agent.log``) and the dashboard shows the application config. The GCS store is
    read only by processes of the cluster, which can already run code in the replicas. With GCS
    fault tolerance (Redis) the key is also kept in Redis: protect it as the cluster's secrets.
    """
    import ray
    from ray.experimental import internal_kv

    if not ray.is_initialized():
        ray.init()
    key_id = key_id_of(key)
    internal_kv._internal_kv_put(_kv_name(key_id), key, overwrite=True, namespace=_KV_NAMESPACE)
    return key_id


def fetch_key(key_id: str) -> bytes:
    """The key :func:`publish_key` stored under ``key_id`` (in a replica).

    Raises:
        ConfigError: the cluster holds no such key (it restarted since the deploy: deploy again).
    """
    from ray.experimental import internal_kv

    key = internal_kv._internal_kv_get(_kv_name(key_id), namespace=_KV_NAMESPACE)
    if not key or key_id_of(key) != key_id:
        raise ConfigError(
            "serving.prediction_log.pii.key_id",
            f"the Ray cluster holds no PII key {key_id!r} (it restarted since the deploy?): "
            "deploy again from a process that has the key ($RAYMLOPS_PII_SALT or <state_dir>/pii_salt).",
        )
    return bytes(key)


def masker_from_settings(settings: Mapping[str, Any] | None) -> PIIMasker | None:
    """The replica's masker from ``prediction_log.pii`` settings (None: nothing to mask)."""
    if not settings or not settings.get("columns"):
        return None
    action = str(settings.get("action", "hash"))
    key = fetch_key(str(settings.get("key_id", ""))) if action == "hash" else b""
    return PIIMasker(tuple(settings["columns"]), action, key)


def check_pii_settings(data: Any, where: str) -> dict[str, Any] | None:
    """Validate ``prediction_log.pii``: ``{"columns": [...], "action": "hash" or "drop", "key_id": ID}``."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ConfigError(
            where, f'must be {{"columns": [...], "action": "hash", "key_id": ...}}, got {data!r}.'
        )
    known = ("columns", "action", "key_id")
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", "is not a setting here.", known)
    columns = data.get("columns")
    if (
        not isinstance(columns, Sequence)
        or isinstance(columns, str)
        or not all(isinstance(c, str) for c in columns)
    ):
        raise ConfigError(f"{where}.columns", f"must be a list of column names, got {columns!r}.")
    action = data.get("action", "hash")
    if action not in ACTIONS:
        raise ConfigError(f"{where}.action", f"must be one of {ACTIONS}, got {action!r}.", ACTIONS)
    key_id = data.get("key_id", "")
    if action == "hash" and columns and (not isinstance(key_id, str) or not key_id):
        raise ConfigError(f"{where}.key_id", "is missing: hashing needs the id of a published key.")
    return {"columns": list(columns), "action": action, "key_id": str(key_id or "")}


def mask_checks(masker: PIIMasker, checks: Iterable[dict[str, Any]]) -> None:
    """Mask, in place, the data values a validation check of a PII column shows: the values outside
    the allowed set and the allowed set itself (a list of names is personal data too), the observed
    min and max. Configured limits (``>= 0``) stay: they are not data."""
    for check in checks:
        if check.get("rule") in ("allowed", "min", "max"):
            check["observed"] = masker.mask_value(check["observed"])
        if check.get("rule") == "allowed":
            check["expected"] = masker.mask_value(check["expected"])


def mask_summary(masker: PIIMasker, summary: dict[str, Any]) -> dict[str, Any]:
    """A column's statistics summary without raw values (min/max/mean/std of a PII column)."""
    return {k: v for k, v in summary.items() if k not in ("min", "max", "mean", "std")}


def mask_profile(masker: PIIMasker, profile: Any) -> Any:  # Profile -> Profile
    """The reference profile with PII columns' categories hashed; numeric PII columns (whose
    quantiles, min and max are raw values) and dropped columns are left out."""
    import dataclasses

    from raymlops.data.profile import OTHER, Profile

    columns = {}
    for name, feature in profile.columns.items():
        if name not in masker.columns:
            columns[name] = feature
        elif masker.action == "hash" and not feature.numeric:
            frequencies = {
                (k if k == OTHER else masker.hash_text(k)): v for k, v in (feature.frequencies or {}).items()
            }
            columns[name] = dataclasses.replace(feature, frequencies=frequencies)
    return Profile(profile.data_version, profile.rows, columns)
