"""Monitoring: the prediction and feedback logs (DESIGN §2, §5); drift and triggers build on them.

``import raymlops.monitoring`` stays light: the submodules (pyarrow) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ParquetLog",
    "PredictionLogger",
    "join_feedback",
    "prediction_schema",
    "read_feedback",
    "read_log",
    "read_predictions",
]

_LAZY = {
    "ParquetLog": "parquet_log",
    "read_log": "parquet_log",
    "PredictionLogger": "prediction_log",
    "join_feedback": "prediction_log",
    "prediction_schema": "prediction_log",
    "read_feedback": "prediction_log",
    "read_predictions": "prediction_log",
}

if TYPE_CHECKING:
    from raymlops.monitoring.parquet_log import ParquetLog, read_log
    from raymlops.monitoring.prediction_log import (
        PredictionLogger,
        join_feedback,
        prediction_schema,
        read_feedback,
        read_predictions,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
