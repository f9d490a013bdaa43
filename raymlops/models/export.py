"""One ONNX artifact per model: fitted preprocessing followed by the model (DESIGN §3).

Export fails unless the ONNX graph reproduces the Python pipeline on a sample of raw rows.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from raymlops.errors import ExportParityError
from raymlops.features.onnx_graph import FEATURES_OUTPUT, preprocessing_graph
from raymlops.features.preprocess import FittedPreprocessor, numeric_column

__all__ = [
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


def providers_for(use_gpu: bool) -> list[str]:
    """onnxruntime execution providers: CUDA first when asked for, CPU always as the fallback."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_gpu else ["CPUExecutionProvider"]


def onnx_feeds(table: pa.Table, input_columns: dict[str, str]) -> dict[str, np.ndarray]:
    """Raw columns -> the graph's inputs: float32 [N, 1] (null -> NaN) or string [N, 1] (null -> '')."""
    feeds = {}
    for name, kind in input_columns.items():
        if kind == "float":
            feeds[name] = numeric_column(table[name]).reshape(-1, 1)
        else:
            values = ["" if v is None else str(v) for v in table[name].to_pylist()]
            feeds[name] = np.asarray(values, dtype=object).reshape(-1, 1)
    return feeds


def parse_input_columns(tag: str) -> dict[str, str]:
    """The registry tag ``raymlops.input_columns`` (``"col:float,col2:string"``) as a dict."""
    return dict(part.split(":", 1) for part in tag.split(",") if part)


def predict_onnx(
    model: str | Path | bytes, table: pa.Table, input_columns: dict[str, str], batch_rows: int = 65536
) -> np.ndarray:
    """Probabilities of a composed graph on raw rows (CPU), in batches so memory stays bounded."""
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, providers=providers_for(False))
    parts = [
        session.run([PROBABILITY_OUTPUT], onnx_feeds(table.slice(start, batch_rows), input_columns))[0]
        for start in range(0, table.num_rows, batch_rows)
    ]
    return np.concatenate(parts).reshape(-1) if parts else np.zeros(0, dtype=np.float32)


def compose_pipeline(pre: FittedPreprocessor, model_graph: Any) -> Any:
    """Merge the preprocessing graph into the model graph, wiring ``features`` between them."""
    import onnx
    from onnx import compose

    opsets = {o.domain: o.version for o in model_graph.opset_import}
    pre_graph = preprocessing_graph(
        pre, opset=opsets.get("", 17), ml_opset=opsets.get("ai.onnx.ml", 3), ir_version=model_graph.ir_version
    )
    model_graph = compose.add_prefix(model_graph, prefix="model/")
    merged = compose.merge_models(
        pre_graph,
        model_graph,
        io_map=[(FEATURES_OUTPUT, f"model/{FEATURES_OUTPUT}")],
        outputs=[f"model/{PROBABILITY_OUTPUT}"],
    )
    merged.graph.output[0].name = PROBABILITY_OUTPUT
    for node in merged.graph.node:
        node.output[:] = [
            PROBABILITY_OUTPUT if o == f"model/{PROBABILITY_OUTPUT}" else o for o in node.output
        ]
    onnx.checker.check_model(merged)
    return merged


def export_pipeline(
    pre: FittedPreprocessor, model: Any, raw_sample: pa.Table, path: Path, *, opset: int, tolerance: float
) -> float:
    """Write the composed graph to ``path`` after checking parity on ``raw_sample``.

    Returns the largest absolute difference between ONNX and Python probabilities.
    """
    import onnxruntime as ort

    merged = compose_pipeline(pre, model.to_onnx(opset))
    payload = merged.SerializeToString()
    session = ort.InferenceSession(payload, providers=providers_for(False))
    onnx_proba = session.run([PROBABILITY_OUTPUT], onnx_feeds(raw_sample, pre.input_columns))[0]
    python_proba = model.predict_proba(pre.transform(raw_sample))
    max_abs_diff = float(np.max(np.abs(onnx_proba - python_proba))) if len(python_proba) else 0.0
    logger.info(
        "onnx parity rows=%d max_abs_diff=%.3g tolerance=%.3g", raw_sample.num_rows, max_abs_diff, tolerance
    )
    if not max_abs_diff <= tolerance:  # also catches NaN
        raise ExportParityError(max_abs_diff, tolerance)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return max_abs_diff
