"""A validated request: its raw input columns in a version's order, ready for the graph (``ModelInputs``).

Every serving protocol turns its request into a ``ModelInputs`` (``raymlops.serving.protocols``);
the graph's feeds are built from it directly (no Arrow table on the request path), the table, for the
prediction log and explainers, only when one is asked for. With the cell checks the protocols share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import RequestError

__all__ = ["FLOAT32_MAX", "ModelInputs", "check_text", "describe"]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def describe(value: Any) -> str:
    """Short, safe rendering of an offending value for an error message."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def check_text(value: str, where: str) -> str:
    """``value`` if it can be encoded as UTF-8, else a 422: JSON's ``\\ud800`` escapes decode to lone
    surrogates, which Arrow, onnxruntime and the JSON answer all refuse."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                f"{where} must be valid Unicode text, got {describe(value)} (a lone surrogate escape)."
            ) from None
    return value


@dataclass(frozen=True)
class ModelInputs:
    """A request's raw input columns, validated, in the spec's order: what a version scores.

    Numeric columns are float64 arrays, NaN being a missing value (the graph imputes it); string
    columns are lists, None being a missing value.
    """

    kinds: Mapping[str, str]  # raw column -> "float" | "string" (the spec's input_columns)
    columns: Mapping[str, Any]  # raw column -> np.ndarray (float) | list[str | None] (string)
    rows: int
    # How ``table()`` writes a missing number: null where every NaN stands for one (/v1 refuses NaN),
    # NaN where the client may send NaN itself (/v2), as it was sent.
    nan_is_null: bool = True

    def feeds(self) -> dict[str, np.ndarray]:
        """The graph's inputs, as ``onnx_feeds`` makes them from a table: float32 [N, 1] (missing ->
        NaN) or object [N, 1] (missing -> '')."""
        feeds = {}
        for name, values in self.columns.items():
            if self.kinds[name] == "float":
                feeds[name] = values.astype(np.float32).reshape(-1, 1)
            else:
                feeds[name] = np.array(["" if v is None else v for v in values], dtype=object).reshape(-1, 1)
        return feeds

    def table(self) -> pa.Table:
        """The columns as float64 / string with nulls (missing numbers: see ``nan_is_null``), for the
        prediction log and explainers."""
        return pa.table(
            {
                name: pa.array(values, type=pa.float64(), from_pandas=self.nan_is_null)
                if self.kinds[name] == "float"
                else pa.array(values, type=pa.string())
                for name, values in self.columns.items()
            }
        )
