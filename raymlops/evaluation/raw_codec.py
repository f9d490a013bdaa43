"""Raw input rows <-> a float matrix that a SHAP masker can mix row by row (:class:`RawFeatureCodec`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import RayMLOpsError, RequestError
from raymlops.evaluation.explanation import require_columns
from raymlops.features.preprocess import numeric_column

__all__ = ["RawFeatureCodec"]


def _strings(column: pa.ChunkedArray) -> list[str]:
    """A categorical column as the ONNX graph sees it (``onnx_feeds``): ``str(value)``, null -> ''."""
    return ["" if v is None else str(v) for v in column.to_pylist()]


def _floats(table: pa.Table, name: str) -> np.ndarray:
    try:
        return numeric_column(table[name])
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RequestError(
            f"column {name!r} must be numeric (or null), got {table[name].type}: {exc}"
        ) from exc


@dataclass(frozen=True)
class RawFeatureCodec:
    """Raw input columns <-> a float64 matrix [rows, columns] that a SHAP masker can mix row by row.

    Numeric columns are their float32 values (null -> NaN, imputed by the graph); categorical columns are
    integer codes into ``vocabularies[column]`` (null -> ''). :meth:`decode` turns a (masked) matrix back
    into ONNX feeds. Codes only ever get appended (:meth:`extend`), so a background encoded with a codec
    keeps its meaning under every extension of it.
    """

    input_columns: dict[str, str]  # raw column -> "float" | "string", in the graph's order
    vocabularies: dict[str, tuple[str, ...]] = field(default_factory=dict)  # categorical column -> values

    @classmethod
    def fit(cls, input_columns: Mapping[str, str], *tables: pa.Table) -> RawFeatureCodec:
        """A codec whose vocabularies hold every value of ``tables`` (sorted, so the codes are stable)."""
        empty: dict[str, tuple[str, ...]] = {c: () for c, kind in input_columns.items() if kind != "float"}
        return cls(dict(input_columns), empty).extend(*tables)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.input_columns)

    def extend(self, *tables: pa.Table) -> RawFeatureCodec:
        """This codec with the categorical values it has not seen appended (sorted) to its vocabularies."""
        vocabularies = dict(self.vocabularies)
        for name, known in self.vocabularies.items():
            seen = set(known)
            new: set[str] = set()
            for table in tables:
                require_columns(table, {name: "string"})
                new.update(v for v in _strings(table[name]) if v not in seen)
            if new:
                vocabularies[name] = (*known, *sorted(new))
        return (
            self if vocabularies == self.vocabularies else RawFeatureCodec(self.input_columns, vocabularies)
        )

    def encode(self, table: pa.Table) -> np.ndarray:
        """Raw rows -> float64 [rows, columns]; categorical values must be in the vocabulary (extend)."""
        require_columns(table, self.input_columns)
        codes = np.empty((table.num_rows, len(self.input_columns)), dtype=np.float64)
        for j, (name, kind) in enumerate(self.input_columns.items()):
            if kind == "float":
                codes[:, j] = _floats(table, name)
                continue
            index = {v: i for i, v in enumerate(self.vocabularies[name])}
            values = _strings(table[name])
            unknown = sorted({v for v in values if v not in index})
            if unknown:
                raise RequestError(
                    f"column {name!r}: value(s) {', '.join(map(repr, unknown[:5]))} are not in the codec's "
                    "vocabulary; extend() the codec with the table first."
                )
            codes[:, j] = [index[v] for v in values]
        return codes

    def decode(self, codes: np.ndarray) -> dict[str, np.ndarray]:
        """A matrix from :meth:`encode` (or a masker) -> the graph's feeds, as ``onnx_feeds`` makes them."""
        codes = np.asarray(codes, dtype=np.float64).reshape(-1, len(self.input_columns))
        feeds = {}
        for j, (name, kind) in enumerate(self.input_columns.items()):
            if kind == "float":
                feeds[name] = codes[:, j].astype(np.float32).reshape(-1, 1)
            else:
                vocabulary = np.asarray(self.vocabularies[name], dtype=object)
                feeds[name] = vocabulary[codes[:, j].astype(np.int64)].reshape(-1, 1)
        return feeds

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_columns": dict(self.input_columns),
            "vocabularies": {c: list(v) for c, v in self.vocabularies.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RawFeatureCodec:
        input_columns = dict(data["input_columns"])
        vocabularies = {c: tuple(str(v) for v in values) for c, values in data["vocabularies"].items()}
        expected = {c for c, kind in input_columns.items() if kind != "float"}
        if set(vocabularies) != expected:
            raise RayMLOpsError(
                f"codec: vocabularies for {sorted(vocabularies)} but categorical columns {sorted(expected)}."
            )
        return cls(input_columns, vocabularies)
