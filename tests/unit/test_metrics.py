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
