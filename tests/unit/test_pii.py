"""PII columns: hashed (HMAC) or dropped before the prediction log, validation reports and profiles."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from raymlops.data.profile import OTHER, Profile
from raymlops.data.report_html import render_data_report
from raymlops.data.stats import DatasetStats, table_stats
from raymlops.data.validation import check_rules
from raymlops.errors import ConfigError
from raymlops.monitoring.prediction_log import PredictionLogger, read_predictions
from raymlops.security.pii import DROPPED, PIIMasker, PIIPolicy, load_or_create_key, mask_profile
from raymlops.serving.spec import ModelSpec, PredictionLogSettings

KEY = b"k" * 32
SPEC = ModelSpec("flights", "1", "/m.onnx", "d", {"distance": "float", "tailnum": "string"}, threshold=0.5)
TAILS = ["N12345", "N777ZZ", None, "N12345"]


def expected_hash(value: str, key: bytes = KEY) -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def test_hash_is_the_keyed_hmac_per_value_nulls_kept_and_drop_removes() -> None:
    table = pa.table({"tailnum": TAILS, "distance": [1.0, 2.0, 3.0, 4.0]})
    hashed = PIIMasker(("tailnum",), "hash", KEY).apply(table)
    assert hashed["tailnum"].to_pylist() == [
        expected_hash("N12345"),
        expected_hash("N777ZZ"),
        None,
        expected_hash("N12345"),
    ]
    assert hashed["distance"] == table["distance"]  # other columns untouched
    other_key = PIIMasker(("tailnum",), "hash", b"o" * 32).apply(table)
    assert other_key["tailnum"][0] != hashed["tailnum"][0]  # keyed: no hash without the key
    # A numeric PII column hashes the text Arrow writes for it; a report's value hashes the same way.
    numbers = PIIMasker(("distance",), "hash", KEY)
    assert numbers.apply(table)["distance"][0].as_py() == expected_hash("1") == numbers.mask_value(1.0)
    assert PIIMasker(("tailnum",), "drop").apply(table).column_names == ["distance"]
    with pytest.raises(ConfigError, match=r"data\.pii\.action"):
        PIIMasker(("tailnum",), "blur", KEY)
    assert "k" * 32 not in repr(PIIMasker(("tailnum",), "hash", KEY))  # the key stays out of reprs


@pytest.mark.parametrize("action", ["hash", "drop", None])
def test_prediction_log_files_never_hold_the_raw_pii_value(tmp_path: Path, action: str | None) -> None:
    masker = PIIMasker(("tailnum",), action, KEY if action == "hash" else b"") if action else None
    logger = PredictionLogger(str(tmp_path), flush_rows=1000, flush_interval_s=60, pii=masker)
    features = pa.table({"distance": [1.5, 2.5, 3.5, 4.5], "tailnum": TAILS})
    logger.log(SPEC, "served", "p1", features, np.asarray([0.1, 0.9, 0.5, 0.2]), 3.0)
    logger.log(SPEC, "shadow", "p1", features, np.asarray([0.2, 0.8, 0.5, 0.3]), 2.0)  # combined on write
    logger.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "predictions").rglob("*.parquet"))
    table = read_predictions(tmp_path, "flights")
    assert table["f_distance"].to_pylist()[:4] == [1.5, 2.5, 3.5, 4.5]
    if action is None:  # the control: without the masker the value is in the file
        assert b"N12345" in raw and table["f_tailnum"][0].as_py() == "N12345"
        return
    assert b"N12345" not in raw and b"N777ZZ" not in raw
    if action == "hash":
        assert (
            table["f_tailnum"].to_pylist()[:4]
            == PIIMasker(("tailnum",), "hash", KEY).apply(pa.table({"tailnum": TAILS}))["tailnum"].to_pylist()
        )
    else:
        assert "f_tailnum" not in table.column_names


def test_key_file_is_made_private_reused_and_refused_when_readable(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "state" / "pii_salt"
    key = load_or_create_key(path)
    assert len(key) == 32 and oct(path.stat().st_mode & 0o777) == "0o600"
    assert load_or_create_key(path) == key  # the same key every time: hashes stay comparable
    policy = PIIPolicy(("tailnum",), "hash", ("tailnum",), "RAYMLOPS_TEST_PII_SALT", path)
    monkeypatch.delenv("RAYMLOPS_TEST_PII_SALT", raising=False)
    assert policy.key() == key
    monkeypatch.setenv("RAYMLOPS_TEST_PII_SALT", "s" * 40)
    assert policy.key() == b"s" * 40  # the env var wins over the file
    monkeypatch.setenv("RAYMLOPS_TEST_PII_SALT", "short")
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        policy.key()
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(path)


def test_validation_report_and_its_messages_show_pii_values_hashed() -> None:
    table = pa.table({"tailnum": ["N12345", "N777ZZ", "N12345"], "distance": [1.0, 2.0, 3.0]})
    stats = DatasetStats(table_stats(table), table.num_rows)
    rules = {"columns": {"tailnum": {"type": "string", "allowed": ["N777ZZ", "N000AA"]}}}
    plain = check_rules(stats, rules)
    assert "N12345" in plain["failures"][0]  # the control: unmasked, the value is quoted
    masked = check_rules(stats, rules, pii=PIIMasker(("tailnum",), "hash", KEY))
    assert masked["passed"] is False  # judged on the raw values all the same
    text = repr(masked) + render_data_report(masked, None, "report")
    for raw in ("N12345", "N777ZZ", "N000AA"):
        assert raw not in text
    assert expected_hash("N12345") in masked["failures"][0]
    dropped = check_rules(stats, rules, pii=PIIMasker(("tailnum",), "drop"))
    assert dropped["columns"]["tailnum"]["checks"][-1]["observed"] == DROPPED


def test_profile_hashes_pii_categories_and_leaves_out_numeric_pii(tmp_path: Path) -> None:
    table = pa.table(
        {"tailnum": ["N12345", "N777ZZ", "N12345"], "age": [31.0, 45.0, 52.0], "hour": [1.0, 2, 3]}
    )
    profile = Profile.from_stats(table_stats(table), table.num_rows, "v1")
    masked = mask_profile(PIIMasker(("tailnum", "age"), "hash", KEY), profile)
    assert set(masked.columns) == {"tailnum", "hour"}  # age: quantiles are raw values
    assert masked.columns["tailnum"].frequencies == {
        expected_hash("N12345"): pytest.approx(2 / 3, abs=1e-4),
        expected_hash("N777ZZ"): pytest.approx(1 / 3, abs=1e-4),
        OTHER: 0.0,
    }
    saved = masked.save(tmp_path / "profile.json").read_text()
    assert "N12345" not in saved and "N777ZZ" not in saved and "age" not in saved
    assert set(mask_profile(PIIMasker(("tailnum",), "drop"), profile).columns) == {"age", "hour"}


def test_router_settings_carry_the_key_id_never_the_key() -> None:
    settings = PredictionLogSettings("/log", pii={"columns": ["tailnum"], "action": "hash", "key_id": "ab12"})
    assert PredictionLogSettings.from_dict(settings.to_dict()) == settings
    with pytest.raises(ConfigError, match=r"prediction_log\.pii\.key_id"):
        PredictionLogSettings("/log", pii={"columns": ["tailnum"], "action": "hash"})
    with pytest.raises(ConfigError, match=r"prediction_log\.pii\.salt"):
        PredictionLogSettings("/log", pii={"columns": ["tailnum"], "salt": "x"})


def test_evaluation_slices_of_a_pii_column_are_hashed_or_left_out(tmp_path: Path, monkeypatch) -> None:
    from omegaconf import OmegaConf

    from raymlops.stages.evaluate import _mask_pii_slices

    monkeypatch.setenv("RAYMLOPS_TEST_SLICE_SALT", "t" * 32)
    data = {
        "columns": {"dest": {"pii": True}},
        "pii": {"salt_env": "RAYMLOPS_TEST_SLICE_SALT", "entity_columns": []},
    }
    cfg = OmegaConf.create(
        {"state_dir": str(tmp_path), "data": {**data, "pii": {**data["pii"], "action": "hash"}}}
    )
    slices = {
        "carrier": [{"value": "UA", "rows": 40}],
        "dest": [{"value": "LAX", "rows": 40, "auc": 0.7}, {"value": "<null>", "rows": 3}],
    }
    masked = _mask_pii_slices(cfg, slices)
    assert list(masked) == ["carrier", "dest"] and masked["carrier"] == slices["carrier"]
    assert masked["dest"] == [
        {"value": expected_hash("LAX", b"t" * 32), "rows": 40, "auc": 0.7},
        {"value": "<null>", "rows": 3},
    ]
    cfg.data.pii.action = "drop"
    assert list(_mask_pii_slices(cfg, slices)) == ["carrier"]
