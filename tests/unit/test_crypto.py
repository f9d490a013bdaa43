"""Encryption at rest (raymlops.security.crypto): round trip, wrong and missing KEKs, tampering, KEK
rotation that rewrites only headers, the rotate-kek command, and no plaintext feature value on disk."""

from __future__ import annotations

import base64
import json
import os

import pyarrow as pa
import pytest

from raymlops.errors import ConfigError, IntegrityError
from raymlops.security import crypto
from raymlops.security.crypto import (
    MAGIC,
    Keyring,
    LocalKek,
    decrypt_bytes,
    encrypt_bytes,
    read_header,
    read_maybe_encrypted,
    rewrap,
    write_encrypted,
)


def _kek(key_id: str, fill: int) -> str:
    return f"{key_id}:{base64.b64encode(bytes([fill]) * 32).decode()}"


OLD, NEW = _kek("k1", 1), _kek("k2", 2)


@pytest.fixture
def old_ring() -> Keyring:
    return Keyring.parse(OLD, "test")


@pytest.fixture(autouse=True)
def _no_process_keyring():
    crypto.configure(None)
    yield
    crypto.configure(None)


def test_round_trip_and_plaintext_pass_through(tmp_path, old_ring):
    data = b"distance,origin\n1089.0,JFK\n" * 50
    sealed = encrypt_bytes(data, old_ring)
    assert sealed.startswith(MAGIC) and data not in sealed and b"JFK" not in sealed
    assert decrypt_bytes(sealed, old_ring) == data
    path = write_encrypted(tmp_path / "f.bin", data, old_ring)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert read_maybe_encrypted(path, old_ring) == data
    plain = tmp_path / "plain.bin"
    plain.write_bytes(data)  # state written before encryption was on keeps reading
    assert read_maybe_encrypted(plain, old_ring) == data
    # Two encryptions of the same bytes differ (fresh DEK and nonce per file).
    assert encrypt_bytes(data, old_ring) != sealed


def test_wrong_or_missing_kek_is_a_clear_error(tmp_path, old_ring, monkeypatch):
    path = write_encrypted(tmp_path / "f.bin", b"secret", old_ring)
    impostor = Keyring.parse(_kek("k1", 9), "file /etc/keks")  # same id, other key
    with pytest.raises(ConfigError, match="KEK 'k1' does not unwrap") as info:
        read_maybe_encrypted(path, impostor)
    assert "InvalidTag" not in str(info.value) and info.value.__cause__ is None
    with pytest.raises(ConfigError, match=r"under KEK 'k1'.*holds k2.*RAYMLOPS_KEK"):
        read_maybe_encrypted(path, Keyring.parse(NEW, "$RAYMLOPS_KEK"))
    monkeypatch.delenv("RAYMLOPS_KEK", raising=False)
    with pytest.raises(ConfigError, match="under KEK 'k1' and no keyring is configured"):
        read_maybe_encrypted(path)
    monkeypatch.setenv("RAYMLOPS_KEK", OLD)  # the environment's keyring is found
    assert read_maybe_encrypted(path) == b"secret"


def test_keyring_sources_and_bad_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYMLOPS_TEST_KEK", f"{NEW},{OLD}")
    ring = Keyring.from_settings(None, "RAYMLOPS_TEST_KEK")
    assert ring.ids == ("k2", "k1") and ring.current.key_id == "k2"
    assert "AQEB" not in repr(ring) and "AQEB" not in repr(ring.current)  # no key in a repr
    keys = tmp_path / "keks"
    keys.write_text(f"# current first\n{NEW}\n{OLD}\n")
    keys.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Keyring.from_settings(str(keys))
    keys.chmod(0o600)
    assert Keyring.from_settings(str(keys)).ids == ("k2", "k1")
    with pytest.raises(ConfigError, match="not 'ID:BASE64' of 32 bytes"):
        Keyring.parse("k1:c2hvcnQ=", "test")
    with pytest.raises(ConfigError, match="RAYMLOPS_NONE is empty"):
        Keyring.from_settings(None, "RAYMLOPS_NONE")


def test_tampered_ciphertext_or_header_is_an_integrity_error(tmp_path, old_ring):
    sealed = bytearray(encrypt_bytes(b"x" * 100, old_ring))
    sealed[-5] ^= 0x01
    with pytest.raises(IntegrityError, match="do not authenticate"):
        decrypt_bytes(bytes(sealed), old_ring, "f.bin")
    header, offset = read_header(encrypt_bytes(b"x", old_ring))
    forged = dict(header, kek_id="k2")  # a header moved to another KEK's name does not unwrap
    ring = Keyring([LocalKek("k2", bytes([1]) * 32)], source="test")
    body = json.dumps(forged).encode()
    moved = MAGIC + len(body).to_bytes(4, "big") + body + encrypt_bytes(b"x", old_ring)[offset:]
    with pytest.raises(ConfigError, match="does not unwrap"):
        decrypt_bytes(moved, ring)


def test_rotation_rewrites_only_the_header(tmp_path, old_ring, monkeypatch):
    path = write_encrypted(tmp_path / "model.onnx", os.urandom(4096), old_ring)
    plaintext = read_maybe_encrypted(path, old_ring)
    before = path.read_bytes()
    _, offset = read_header(before)
    rotated = Keyring.parse(f"{NEW}\n{OLD}", "test")
    assert rewrap(path, rotated) is True
    after = path.read_bytes()
    _, new_offset = read_header(after)
    assert read_header(after)[0]["kek_id"] == "k2"
    assert after[new_offset:] == before[offset:]  # the ciphertext bytes are identical
    assert after[:new_offset] != before[:offset]
    assert rewrap(path, rotated) is False  # already current: nothing written
    with pytest.raises(ConfigError, match="under KEK 'k2'"):  # the old KEK alone no longer reads it
        read_maybe_encrypted(path, old_ring)
    assert read_maybe_encrypted(path, Keyring.parse(NEW, "test")) == plaintext

    # The command walks a folder: one rotated, one plaintext, and the audit record names the KEK.
    from raymlops.cli import main
    from raymlops.security.audit import read_audit

    second = write_encrypted(tmp_path / "data" / "part-0.parquet", b"rows", old_ring)
    (tmp_path / "data" / "plain.json").write_text("{}")
    keks = tmp_path / "keks"
    keks.write_text(f"{NEW}\n{OLD}\n")
    keks.chmod(0o600)
    audit = tmp_path / "audit.jsonl"
    code = main(
        [
            "security",
            "rotate-kek",
            "--path",
            str(tmp_path / "data"),
            f"state_dir={tmp_path}",
            f"security.encryption.kek_file={keks}",
            f"security.audit_log={audit}",
        ]
    )
    assert code == 0
    assert read_header(second.read_bytes())[0]["kek_id"] == "k2"
    record = read_audit(audit)[-1]
    assert (record.action, record.target, record.details["rewrapped"]) == ("security.rotate", "k2", 1)
    assert "AQEB" not in audit.read_text() and "AgIC" not in audit.read_text()  # no key in the log


def test_files_on_disk_hold_no_plaintext_feature_values(tmp_path, old_ring):
    """A prediction log, a monitor report, a profile and a model card written with encryption on: the
    raw bytes on disk hold neither a categorical value nor a float's repr, and each reads back. The
    same writers without a keyring do write them (the check can fail)."""
    from raymlops.data.profile import Profile
    from raymlops.evaluation.model_card import ModelCard, write_model_card
    from raymlops.monitoring.monitor import write_outputs
    from raymlops.monitoring.parquet_log import ParquetLog, read_log
    from raymlops.monitoring.report import MonitorReport

    distance = 1089.4375  # exact in binary: its repr is what a writer prints
    schema = pa.schema([("f_origin", pa.string()), ("f_distance", pa.float64()), ("model", pa.string())])
    note = f"origin JFK drifted; distance {distance!r}"

    def write_all(root, keyring):
        crypto.configure(keyring)  # what run_pipeline does with security.encryption
        try:
            log = ParquetLog(str(root / "log"), schema=schema, partition_cols=["model"])
            log.append(pa.table({"f_origin": ["JFK"] * 3, "f_distance": [distance] * 3, "model": ["m"] * 3}))
            log.close()
            slices = {"origin": [{"value": "JFK", "rows": 3, "test/auc": 0.5}]}
            write_model_card(ModelCard("m", "1", training_data={"note": note}, slices=slices), root / "card")
            report = MonitorReport("m", None, "a", "b", 0.0, "log", "pyarrow", 3, {}, (), (note,), {})
            write_outputs(report, root / "monitor")
            profile = {
                "rows": 3,
                "data_version": "v",
                "columns": {"origin": {"kind": "categorical", "top": {"JFK": 3}}},
            }
            (root / "profile.json").parent.mkdir(parents=True, exist_ok=True)
            crypto.write_sensitive(root / "profile.json", json.dumps(profile))
            return read_log(str(root / "log"), ["model"])
        finally:
            crypto.configure(None)

    table = write_all(tmp_path / "on", old_ring)
    needles = [b"JFK", repr(distance).encode()]
    files = [p for p in (tmp_path / "on").rglob("*") if p.is_file() and p.suffix != ".prom"]
    assert {p.name for p in files} >= {"model_card.html", "model_card.md", "report.json", "summary.txt"}
    assert any(p.name.endswith(".parquet.enc") for p in files)
    for path in [*files, *(tmp_path / "on").rglob("*.prom")]:
        raw = path.read_bytes()
        assert not any(n in raw for n in needles), path
        assert path.suffix == ".prom" or raw.startswith(MAGIC), path
    # Each reads back with the keyring: the log through read_log, the rest through read_maybe_encrypted.
    crypto.configure(old_ring)
    assert read_log(str(tmp_path / "on" / "log"), ["model"]).equals(table)
    crypto.configure(None)
    assert table.column("f_origin").to_pylist() == ["JFK"] * 3
    assert table.column("model").to_pylist() == ["m"] * 3
    card = read_maybe_encrypted(tmp_path / "on" / "card" / "model_card.html", old_ring)
    assert b"JFK" in card
    assert json.loads(read_maybe_encrypted(tmp_path / "on" / "monitor" / "m" / "report.json", old_ring))
    write_all(tmp_path / "off", None)
    plain = b"".join(p.read_bytes() for p in (tmp_path / "off").rglob("*") if p.is_file())
    assert all(n in plain for n in needles)
    del Profile
