"""Right to erasure: remove one subject's rows from the prediction log and its feedback.

``python -m raymlops data erase --entity tailnum=N12345`` finds the subject's prediction rows by an
entity column (``data.pii.entity_columns``; in the log as ``f_<column>``, hashed when the column is
a hashed PII column, so the value given is hashed with the same key to match) or by
``prediction_id``, removes them, and removes the feedback rows of the prediction ids it removed.

Each affected parquet file is rewritten without the rows: written to a hidden temporary file in the
same directory (which readers skip) and renamed over the original, so a reader sees the old file or
the new one, never half of one; a file left with no rows is deleted. The router only ever adds new
files, never rewrites one, so erasing while it runs is safe; rows it still holds in its buffer (at
most ``flush_interval_s``, 2 s by default) are written after the erase: erase again after that to be
sure.

What was removed (files, rows) is recorded in the security audit log as ``data.erase`` with the
value's HMAC, never the value itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from raymlops.errors import ConfigError
from raymlops.monitoring.prediction_log import FEATURE_PREFIX, FEEDBACK_DIR, PREDICTIONS_DIR
from raymlops.security.audit import audit_event
from raymlops.security.pii import PIIPolicy, hash_text

__all__ = ["ErasureResult", "erase_entity", "parse_entity"]

PREDICTION_ID = "prediction_id"


@dataclass(frozen=True)
class ErasureResult:
    key: str
    value_hmac: str  # HMAC-SHA256 of the value with the PII key: names the subject without the value
    prediction_rows: int = 0
    feedback_rows: int = 0
    files: dict[str, int] = field(default_factory=dict)  # file (relative to the log root) -> rows removed
    prediction_ids: int = 0  # distinct prediction ids erased

    def lines(self) -> list[str]:
        out = [
            f"erased {self.key} (hmac {self.value_hmac[:16]}): {self.prediction_rows} prediction row(s), "
            f"{self.feedback_rows} feedback row(s) of {self.prediction_ids} prediction id(s), "
            f"{len(self.files)} file(s) rewritten"
        ]
        out += [f"  {path}: -{rows} row(s)" for path, rows in sorted(self.files.items())]
        return out


def parse_entity(text: str, policy: PIIPolicy) -> tuple[str, str]:
    """``KEY=VALUE`` -> ``(KEY, VALUE)``; KEY must be an entity column or ``prediction_id``."""
    valid = sorted({*policy.entity_columns, PREDICTION_ID})
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise ConfigError(
            "--entity", f"must be KEY=VALUE (e.g. {valid[0]}=...), got {text!r}; KEY is one of {valid}."
        )
    if key not in valid:
        raise ConfigError(
            "--entity",
            f"{key!r} is not an entity column (data.pii.entity_columns) nor prediction_id; valid: {valid}. "
            f"Add the column to data.pii.entity_columns to erase by it.",
            valid,
        )
    if key in policy.columns and policy.action == "drop":
        raise ConfigError(
            "--entity",
            f"{key!r} is a PII column with data.pii.action=drop: the log does not hold it, so no row can "
            "be found by it. Erase by prediction_id instead.",
        )
    return key, value


_ENCRYPTED = ".parquet.enc"  # a part encrypted at rest (raymlops.security.crypto)


def _files(root: Path) -> list[Path]:
    """The log's parquet files, plain and encrypted (hidden temporary files skipped, as readers do)."""
    if not root.is_dir():
        return []
    found = [*root.rglob("*.parquet"), *root.rglob(f"*{_ENCRYPTED}")]
    return sorted(p for p in found if not p.name.startswith("."))


def _read(path: Path, keyring: Any) -> tuple[pa.Table, Any]:
    """The file's rows and the keyring it was encrypted with (None: a plain file)."""
    import pyarrow.parquet as pq

    if not path.name.endswith(_ENCRYPTED):
        return pq.read_table(path), None
    from raymlops.security.crypto import decrypt_bytes, keyring_for

    raw = path.read_bytes()
    keyring = keyring if keyring is not None else keyring_for(raw, str(path))
    return pq.read_table(pa.BufferReader(decrypt_bytes(raw, keyring, str(path)))), keyring


def _rewrite(path: Path, kept: pa.Table, keyring: Any) -> None:
    """Replace ``path`` by ``kept`` atomically (temp file + rename; encrypted again if it was);
    no rows left: delete it."""
    import pyarrow.parquet as pq

    if kept.num_rows == 0:
        path.unlink()
        return
    buffer = pa.BufferOutputStream()
    pq.write_table(kept, buffer)
    data = buffer.getvalue().to_pybytes()
    if keyring is not None:
        from raymlops.security.crypto import encrypt_bytes

        data = encrypt_bytes(data, keyring)
    temporary = path.with_name(f".{path.name}.erase.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())  # the data is on disk before the rename makes it the file
    os.replace(temporary, path)


def _match(table: pa.Table, column: str, value: str) -> pa.Array | None:
    """Row mask of ``column == value`` (a numeric column compared as a number), None: no such column."""
    import pyarrow.compute as pc

    if column not in table.column_names:
        return None
    values = table[column]
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        target: Any = value
    else:
        try:
            target = pa.scalar(float(value)).cast(values.type)
        except (ValueError, pa.ArrowInvalid):
            return None
    return pc.fill_null(pc.equal(values, target), False)


def erase_entity(
    log_root: str | os.PathLike[str],
    policy: PIIPolicy,
    key: str,
    value: str,
    *,
    audit_log: str | os.PathLike[str] | None = None,
    who: str | None = None,
    keyring: Any = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> ErasureResult:
    """Remove the prediction rows whose ``key`` is ``value`` and the feedback of their prediction ids.

    Args:
        log_root: The prediction log's root (``monitor.log_root``); a local directory.
        policy: The config's PII policy: entity columns, PII columns, the key.
        key: An entity column or ``prediction_id`` (checked as :func:`parse_entity` does).
        value: The subject's value, as sent in requests.
        audit_log: The security audit log the erasure is recorded in.
        keyring: Decrypts (and re-encrypts) parts encrypted at rest; default: the process's, the
            environment's or the cluster's (``raymlops.security.crypto.keyring_for``).
        progress: Called with (files read, files in the log) after each prediction or feedback file.
    """
    import pyarrow.compute as pc

    parse_entity(f"{key}={value}", policy)
    if "://" in os.fspath(log_root):
        raise ConfigError("monitor.log_root", f"erase works on a local log; {log_root} is a URI.")
    secret = policy.key()
    value_hmac = hash_text(secret, value)
    root = Path(log_root)
    hashed = key in policy.columns and policy.action == "hash"
    column = PREDICTION_ID if key == PREDICTION_ID else FEATURE_PREFIX + key
    wanted = value_hmac if hashed else value

    files: dict[str, int] = {}
    erased_ids: set[str] = {value} if key == PREDICTION_ID else set()
    prediction_rows = 0
    parts, feedback_parts = _files(root / PREDICTIONS_DIR), _files(root / FEEDBACK_DIR)
    total = len(parts) + len(feedback_parts)
    for done, path in enumerate(parts, 1):
        if progress is not None:
            progress(done, total)
        table, used = _read(path, keyring)
        mask = _match(table, column, wanted)
        if mask is None:
            continue
        hits = int(pc.sum(mask).as_py() or 0)
        if not hits:
            continue
        erased_ids.update(i for i in table.filter(mask)[PREDICTION_ID].to_pylist() if i is not None)
        _rewrite(path, table.filter(pc.invert(mask)), used)
        files[str(path.relative_to(root))] = hits
        prediction_rows += hits

    feedback_rows = 0
    if erased_ids:
        ids = pa.array(sorted(erased_ids), pa.string())
        for done, path in enumerate(feedback_parts, len(parts) + 1):
            if progress is not None:
                progress(done, total)
            table, used = _read(path, keyring)
            mask = pc.is_in(table[PREDICTION_ID], value_set=ids)
            hits = int(pc.sum(mask).as_py() or 0)
            if hits:
                _rewrite(path, table.filter(pc.invert(mask)), used)
                files[str(path.relative_to(root))] = hits
                feedback_rows += hits

    result = ErasureResult(key, value_hmac, prediction_rows, feedback_rows, files, len(erased_ids))
    audit_event(
        "data.erase",
        f"{key} (hmac {value_hmac[:16]})",
        "ok",
        "right to erasure: python -m raymlops data erase",
        who=who,
        details={
            "key": key,
            "value_hmac": value_hmac,  # the subject, without the value
            "log_root": str(root),
            "prediction_rows": prediction_rows,
            "feedback_rows": feedback_rows,
            "files": files,
        },
        path=audit_log,
    )
    return result
