"""Evaluation metrics and gates."""

from __future__ import annotations

import numpy as np
import pytest

from raymlops.errors import ConfigError
from raymlops.evaluation.metrics import binary_metrics, check_gates, parse_gate


def test_perfect_and_constant_predictors() -> None:
    y = np.array([0, 0, 1, 1, 0, 1], dtype=np.float32)
    perfect = binary_metrics(y, y.astype(float), "test")
    constant = binary_metrics(y, np.full(6, 0.5), "test")
    assert perfect["test/auc"] == 1.0 and perfect["test/accuracy"] == 1.0
    assert constant["test/auc"] == 0.5
    assert perfect["test/logloss"] < constant["test/logloss"]


def test_gates_report_each_failure_and_unknown_metrics() -> None:
    metrics = {"test/auc": 0.55, "test/logloss": 0.7}
    failures = check_gates(metrics, ["test/auc >= 0.6", "test/acc>0.5", "test/logloss <= 0.8"])
    assert failures[0] == "test/auc = 0.5500, must be >= 0.6"
    assert "test/acc: no such metric" in failures[1] and "test/auc" in failures[1]
    assert len(failures) == 2
    assert check_gates(metrics, ["test/auc >= 0.5", "test/logloss<0.71"]) == []
    assert check_gates({"test/auc": float("nan")}, ["test/auc >= 0.5"]) != []


def test_malformed_gate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"test/auc = 0\.6"):
        parse_gate("test/auc = 0.6")
    assert parse_gate("valid/logloss<1e-1") == ("valid/logloss", "<", 0.1)


def test_regression_metrics() -> None:
    from raymlops.evaluation.metrics import regression_metrics

    y = np.array([1.0, 2.0, 3.0, 4.0])
    exact = regression_metrics(y, y, "test")
    off = regression_metrics(y, y + 1.0, "test")
    assert exact["test/rmse"] == 0.0 and exact["test/r2"] == 1.0
    assert off["test/rmse"] == off["test/mae"] == 1.0 and off["test/r2"] == pytest.approx(1 - 4 / 5)


def test_slice_metrics_count_every_value_and_skip_metrics_for_small_slices() -> None:
    import pyarrow as pa

    from raymlops.evaluation.metrics import slice_metrics

    rng = np.random.default_rng(0)
    carriers = np.array(["UA"] * 60 + ["AA"] * 40 + ["HA"] * 5)
    y = rng.integers(0, 2, len(carriers)).astype(float)
    proba = np.where(carriers == "UA", y * 0.8 + 0.1, 0.5)  # UA separable, the rest constant
    table = pa.table({"carrier": carriers, "origin": ["EWR"] * len(carriers)})
    slices = slice_metrics(table, y, proba, task="binary", columns=["carrier"], split="test", min_rows=30)
    rows = {r["value"]: r for r in slices["carrier"]}
    assert [r["value"] for r in slices["carrier"]] == ["UA", "AA", "HA"]  # most frequent first
    assert rows["UA"]["rows"] == 60 and rows["UA"]["auc"] == 1.0 and rows["AA"]["auc"] == 0.5
    assert rows["HA"] == {"value": "HA", "rows": 5}  # counted, but too small for metrics
    with pytest.raises(ConfigError, match="dest"):
        slice_metrics(table, y, proba, task="binary", columns=["dest"], split="test")


def test_champion_gate_knows_which_direction_is_worse() -> None:
    from raymlops.evaluation.metrics import champion_gates

    candidate = {"test/auc": 0.70, "test/logloss": 0.60}
    champion = {"test/auc": 0.73, "test/logloss": 0.58}
    results = champion_gates(candidate, champion, {"test/auc": 0.02, "test/logloss": 0.05}, "champion v1")
    auc, logloss = results
    assert not auc.passed and "worse by 0.0300" in auc.detail and "vs champion v1 0.7300" in auc.detail
    assert logloss.passed  # 0.02 higher log loss is within the 0.05 allowed
    [better] = champion_gates({"test/auc": 0.75}, champion, {"test/auc": 0.0}, "champion v1")
    assert better.passed and "better by 0.0200" in better.detail
    [unknown] = champion_gates(candidate, champion, {"test/f1": 0.1}, "champion v1")
    assert not unknown.passed and "no such metric" in unknown.detail
    with pytest.raises(ConfigError, match="no known direction"):
        champion_gates({"test/f1": 1.0}, {"test/f1": 1.0}, {"test/f1": 0.1}, "champion v1")
