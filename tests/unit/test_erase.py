"""Right to erasure on real prediction-log and feedback files written by the router's PredictionLogger."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.erase import erase_entity, parse_entity
from raymlops.errors import ConfigError
from raymlops.monitoring.prediction_log import Feedback, PredictionLogger, read_feedback, read_predictions
from raymlops.security import crypto
from raymlops.security.audit import read_audit, verify_chain
from raymlops.security.pii import PIIPolicy, hash_text
from raymlops.serving.spec import ModelSpec

SPEC = ModelSpec("flights", "1", "/m.onnx", "d", {"distance": "float", "tailnum": "string"}, threshold=0.5)
SUBJECT = "N12345"


def write_log(root: Path, policy: PIIPolicy) -> None:
    """Three requests in three files (a flush after each), feedback for all of them in two files."""
    logger = PredictionLogger(str(root), flush_rows=1000, flush_interval_s=60, pii=policy.masker())
    requests = {
        "p1": [SUBJECT, "N777ZZ"],  # the subject's row shares a file with someone else's
        "p2": ["N777ZZ"],
        "p3": [SUBJECT],  # a file holding only the subject: deleted
    }
    for prediction_id, tails in requests.items():
        features = pa.table({"distance": [100.0] * len(tails), "tailnum": tails})
        logger.log(SPEC, "served", prediction_id, features, np.full(len(tails), 0.5), 1.0)
        logger.flush()
    logger.log_feedback([Feedback("p1", 1.0, 0), Feedback("p2", 0.0, 0)])
    logger.flush()
    logger.log_feedback([Feedback("p3", 1.0, 0)])
    logger.close()


@pytest.fixture
def policy(tmp_path: Path, monkeypatch) -> PIIPolicy:
    monkeypatch.delenv("RAYMLOPS_TEST_ERASE_SALT", raising=False)
    return PIIPolicy(("tailnum",), "hash", ("tailnum",), "RAYMLOPS_TEST_ERASE_SALT", tmp_path / "pii_salt")


def test_erase_removes_the_subjects_rows_and_their_feedback_and_audits_without_the_value(
    tmp_path: Path, policy: PIIPolicy
) -> None:
    root, audit = tmp_path / "log", tmp_path / "audit.jsonl"
    write_log(root, policy)
    before = read_predictions(root, "flights")
    assert before.num_rows == 4 and SUBJECT.encode() not in b"".join(
        p.read_bytes() for p in root.rglob("*.parquet")
    )  # the log holds the hash only: erase must match by hashing the value

    result = erase_entity(root, policy, "tailnum", SUBJECT, audit_log=audit, who="dpo")

    after = read_predictions(root, "flights")
    subject = hash_text(policy.key(), SUBJECT)
    assert subject not in after["f_tailnum"].to_pylist()
    assert sorted(zip(after["prediction_id"].to_pylist(), after["row"].to_pylist(), strict=True)) == [
        ("p1", 1),
        ("p2", 0),
    ]  # the other person's row in p1 stays, with its row index
    # Feedback of every erased prediction id goes too (p1's row 0 shares the id with a kept row: the
    # feedback of p1 is the subject's request as well).
    assert read_feedback(root)["prediction_id"].to_pylist() == ["p2"]
    assert (result.prediction_rows, result.feedback_rows, result.prediction_ids) == (2, 2, 2)
    assert len(result.files) == 4 and not list(root.rglob(".*.tmp"))  # no temporary left behind
    # The audit record says what went, names the subject by its HMAC, never by the value.
    [record] = read_audit(audit)
    assert (record.action, record.outcome, record.who) == ("data.erase", "ok", "dpo")
    assert record.details["value_hmac"] == subject and record.details["prediction_rows"] == 2
    assert SUBJECT not in audit.read_text() and verify_chain(audit) is None
    # Erasing again finds nothing, and says so.
    again = erase_entity(root, policy, "tailnum", SUBJECT, audit_log=audit)
    assert (again.prediction_rows, again.feedback_rows, again.files) == (0, 0, {})


def test_erase_by_prediction_id_and_refuses_unknown_keys(tmp_path: Path, policy: PIIPolicy) -> None:
    root = tmp_path / "log"
    write_log(root, policy)
    result = erase_entity(root, policy, "prediction_id", "p2", audit_log=tmp_path / "a.jsonl")
    assert (result.prediction_rows, result.feedback_rows) == (1, 1)
    assert "p2" not in read_predictions(root, "flights")["prediction_id"].to_pylist()
    with pytest.raises(
        ConfigError, match=r"'origin' is not an entity column.*\['prediction_id', 'tailnum'\]"
    ):
        parse_entity("origin=JFK", policy)
    with pytest.raises(ConfigError, match="must be KEY=VALUE"):
        parse_entity("tailnum", policy)
    dropped = PIIPolicy(("tailnum",), "drop", ("tailnum",), policy.salt_env, policy.salt_file)
    with pytest.raises(ConfigError, match="action=drop"):
        parse_entity("tailnum=N1", dropped)


def test_cli_erases_and_prints_what_it_removed(tmp_path: Path, capsys, monkeypatch) -> None:
    from raymlops.cli import main

    monkeypatch.delenv("RAYMLOPS_PII_SALT", raising=False)
    overrides = [
        f"state_dir={tmp_path}",
        "+data.columns={tailnum: {pii: true}}",
        "data.pii.entity_columns=[tailnum]",
    ]
    from raymlops.config import compose

    cfg = compose(overrides)
    write_log(Path(cfg.monitor.log_root), PIIPolicy.from_config(cfg))
    assert main(["data", "erase", "--entity", f"tailnum={SUBJECT}", *overrides]) == 0
    out = capsys.readouterr().out
    assert "2 prediction row(s), 2 feedback row(s)" in out and SUBJECT not in out
    assert read_audit(cfg.security.audit_log)[-1].action == "data.erase"
    assert main(["data", "erase", "--entity", "origin=JFK", *overrides]) == 2
    assert "valid: ['prediction_id', 'tailnum']" in capsys.readouterr().err


def test_erase_rewrites_encrypted_parts_still_encrypted(tmp_path: Path, policy: PIIPolicy) -> None:
    keyring = crypto.Keyring.parse("k1:" + base64.b64encode(b"x" * 32).decode(), "test")
    root = tmp_path / "log"
    crypto.configure(keyring)  # the log encrypts every part with the process's keyring
    try:
        write_log(root, policy)
    finally:
        crypto.configure(None)
    # A log that writes its parts in the clear with a keyring configured is the regression this test
    # exists to catch: it fails here, never skips.
    written = [p for p in root.rglob("*") if p.is_file()]
    assert written and all(crypto.is_encrypted(p.read_bytes()) for p in written), [
        p.name for p in written if not crypto.is_encrypted(p.read_bytes())
    ]
    assert list(root.rglob("*.parquet.enc"))
    result = erase_entity(root, policy, "tailnum", SUBJECT, audit_log=tmp_path / "a.jsonl", keyring=keyring)
    assert (result.prediction_rows, result.feedback_rows) == (2, 2)
    parts = [p for p in root.rglob("*") if p.is_file()]
    assert parts and all(crypto.is_encrypted(p.read_bytes()) for p in parts)  # nothing left in the clear
    crypto.configure(keyring)
    try:
        kept = read_predictions(root, "flights")
    finally:
        crypto.configure(None)
    assert sorted(kept["prediction_id"].to_pylist()) == ["p1", "p2"]
