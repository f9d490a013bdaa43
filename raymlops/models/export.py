"""One ONNX artifact per model: fitted preprocessing followed by the model (DESIGN §3).

Export fails unless the ONNX graph reproduces the Python pipeline on a sample of raw rows. The graph's
output is the task's (``probability`` [N], ``probabilities`` [N, K], ``value`` [N]).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import ConfigError, ExportParityError
from raymlops.features.onnx_graph import FEATURES_OUTPUT, preprocessing_graph
from raymlops.features.preprocess import FittedPreprocessor, numeric_column
from raymlops.models.family import fitted_task
from raymlops.registry.tags import INPUT_COLUMNS_TAG

__all__ = [
    "INPUT_KINDS",
    "PROBABILITY_OUTPUT",
    "compose_pipeline",
    "export_pipeline",
    "onnx_feeds",
    "parse_input_columns",
    "predict_onnx",
    "providers_for",
]

logger = logging.getLogger(__name__)
PROBABILITY_OUTPUT = "probability"
INPUT_KINDS = ("float", "string")  # the wire types of a served graph's raw-column inputs


def providers_for(use_gpu: bool) -> list[str]:
    """onnxruntime execution providers: CUDA first when asked for, CPU always as the fallback."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_gpu else ["CPUExecutionProvider"]


_STRING_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view)


def onnx_feeds(table: pa.Table, input_columns: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Raw columns -> the graph's inputs: float32 [N, 1] (null -> NaN) or string [N, 1] (null -> '').

    Arrow string columns (plain, large, view, dictionary-encoded) convert without a per-row Python
    loop; other types declared ``string`` (ints, say) become ``str(v)``.
    """
    import pyarrow.compute as pc

    feeds = {}
    for name, kind in input_columns.items():
        column = table[name]
        if kind == "float":
            feeds[name] = numeric_column(column).reshape(-1, 1)
            continue
        if pa.types.is_dictionary(column.type) and any(t(column.type.value_type) for t in _STRING_TYPES):
            column = pc.cast(column, column.type.value_type)
        if any(t(column.type) for t in _STRING_TYPES):
            values = pc.fill_null(column, "").to_numpy(zero_copy_only=False)
            feeds[name] = values.astype(object, copy=False).reshape(-1, 1)
        else:
            strings = ["" if v is None else str(v) for v in column.to_pylist()]
            feeds[name] = np.asarray(strings, dtype=object).reshape(-1, 1)
    return feeds


def parse_input_columns(tag: str | None, model: str = "the model") -> dict[str, str]:
    """The ``raymlops.input_columns`` tag (``col:float,col2:string``) as {column: kind}."""
    if not tag:
        raise ConfigError(
            "model",
            f"{model} has no {INPUT_COLUMNS_TAG!r} tag, so its input columns are unknown; "
            "register it with raymlops (the register stage writes the tag).",
        )
    columns: dict[str, str] = {}
    for item in tag.split(","):
        name, _, kind = item.strip().rpartition(":")
        if not name or kind not in INPUT_KINDS:
            raise ConfigError(
                "model",
                f"{model}: {INPUT_COLUMNS_TAG} entry {item!r} is not <column>:<kind> with kind one of "
                f"{', '.join(INPUT_KINDS)}.",
            )
        columns[name] = kind
    return columns


def predict_onnx(
    model: str | Path | bytes,
    table: pa.Table,
    input_columns: dict[str, str],
    output: str = PROBABILITY_OUTPUT,
    batch_rows: int = 65536,
) -> np.ndarray:
    """The prediction of a composed graph's ``output`` (the task's ``output().name``) on raw rows (CPU),
    in batches so memory stays bounded: float32 [N] for an output of width 1, else [N, K]."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=providers_for(False))
    parts = [
        session.run([output], onnx_feeds(table.slice(start, batch_rows), input_columns))[0]
        for start in range(0, table.num_rows, batch_rows)
    ]
    if not parts:
        width = _output_width(session, output)
        return np.zeros((0, width) if width > 1 else 0, dtype=np.float32)
    pred = np.concatenate(parts)
    return pred.reshape(-1) if pred.ndim == 1 or pred.shape[1] == 1 else pred


def _output_width(session: Any, output: str) -> int:
    shape = next(o.shape for o in session.get_outputs() if o.name == output)
    return shape[1] if len(shape) > 1 and isinstance(shape[1], int) else 1


def compose_pipeline(pre: FittedPreprocessor, model_graph: Any) -> Any:
    """Merge the preprocessing graph into the model graph, wiring ``features`` between them; the model
    graph's outputs (the task's) keep their names."""
    import onnx
    from onnx import compose

    opsets = {o.domain: o.version for o in model_graph.opset_import}
    pre_graph = preprocessing_graph(
        pre, opset=opsets.get("", 17), ml_opset=opsets.get("ai.onnx.ml", 3), ir_version=model_graph.ir_version
    )
    names = {f"model/{o.name}": o.name for o in model_graph.graph.output}
    model_graph = compose.add_prefix(model_graph, prefix="model/")
    merged = compose.merge_models(
        pre_graph, model_graph, io_map=[(FEATURES_OUTPUT, f"model/{FEATURES_OUTPUT}")], outputs=list(names)
    )
    for output in merged.graph.output:
        output.name = names[output.name]
    for node in merged.graph.node:
        node.output[:] = [names.get(o, o) for o in node.output]
    onnx.checker.check_model(merged)
    return merged


def export_pipeline(
    pre: FittedPreprocessor, model: Any, raw_sample: pa.Table, path: Path, *, opset: int, tolerance: float
) -> float:
    """Write the composed graph to ``path`` after checking parity on ``raw_sample``.

    The graph's output is ``model.task_.output().name``. Returns the largest difference between the ONNX
    and the Python predictions: absolute for values within [-1, 1] (probabilities), relative to the
    value beyond (float32 regression values in the thousands differ in their last bits only).
    """
    import onnxruntime as ort

    output = fitted_task(model).output().name
    merged = compose_pipeline(pre, model.to_onnx(opset))
    payload = merged.SerializeToString()
    session = ort.InferenceSession(payload, providers=providers_for(False))
    onnx_pred = session.run([output], onnx_feeds(raw_sample, pre.input_columns))[0]
    python_pred = np.asarray(model.predict(pre.transform(raw_sample)))
    if onnx_pred.shape != python_pred.shape:
        raise ExportParityError(float("inf"), tolerance)
    scale = np.maximum(1.0, np.abs(python_pred))
    max_abs_diff = float(np.max(np.abs(onnx_pred - python_pred) / scale)) if python_pred.size else 0.0
    logger.info(
        "onnx parity rows=%d max_abs_diff=%.3g tolerance=%.3g", raw_sample.num_rows, max_abs_diff, tolerance
    )
    if not max_abs_diff <= tolerance:  # also catches NaN
        raise ExportParityError(max_abs_diff, tolerance)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return max_abs_diff
