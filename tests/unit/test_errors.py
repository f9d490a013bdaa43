"""Errors keep their fields across pickling (Ray processes) and say what to do."""

from __future__ import annotations

import pickle

import pytest

from raymlops import errors


@pytest.mark.parametrize(
    "error",
    [
        errors.ConfigError("model.lrr", "unknown key.", ["lr", "epochs"]),
        errors.DataValidationError(["column 'x': type"], {"rows": 3}),
        errors.GateFailedError(["test/auc = 0.4, must be at least 0.6"], {"test/auc": 0.4}),
        errors.ExportParityError(0.1, 1e-4),
        errors.StageError("train", "run-1", "boom"),
        errors.ModelNotFoundError("flights", ["flights-delay"]),
        errors.RequestError("missing column 'dest'", 422),
        errors.MissingDependencyError("xgboost", "model=xgboost"),
    ],
)
def test_errors_survive_pickling(error: errors.RayMLOpsError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert isinstance(copy, errors.RayMLOpsError)


def test_config_error_suggests_the_close_choice() -> None:
    message = str(errors.ConfigError("model.lrr", "unknown key.", ["lr", "epochs", "dropout"]))
    assert "'lr'" in message and "Did you mean" in message and "dropout" in message


def test_unknown_model_names_the_available_ones() -> None:
    message = str(errors.ModelNotFoundError("flight-delay", ["flights-delay", "other"]))
    assert "flights-delay" in message and "other" in message
