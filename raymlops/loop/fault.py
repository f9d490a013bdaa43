"""A deliberate fault for the ``flights_loop_broken`` demo: an exported graph whose predictions are shifted.

It stands for the bugs that pass offline evaluation but not production: the evaluate stage scores the
trained model in Python, the export parity check compares the graph with it, and only then does this
rewrite add ``shift`` to every served probability (clipped to [0, 1]). The progressive rollout compares
the candidate's live mean prediction with the champion's (``serve.rollout.max_mean_shift``) and rolls it
back; the champion never stops serving.
"""

from __future__ import annotations

from pathlib import Path

from raymlops.models.export import PROBABILITY_OUTPUT

__all__ = ["shift_predictions"]


def shift_predictions(path: Path, shift: float) -> None:
    """Rewrite the ONNX model at ``path`` so that ``probability`` becomes ``clip(probability + shift)``."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    raw = f"{PROBABILITY_OUTPUT}_before_fault"
    for node in graph.node:
        node.output[:] = [raw if name == PROBABILITY_OUTPUT else name for name in node.output]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.asarray(shift, dtype=np.float32), "fault_shift"),
            numpy_helper.from_array(np.asarray(0.0, dtype=np.float32), "fault_low"),
            numpy_helper.from_array(np.asarray(1.0, dtype=np.float32), "fault_high"),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Add", [raw, "fault_shift"], ["fault_shifted"], name="fault_add"),
            helper.make_node("Clip", ["fault_shifted", "fault_low", "fault_high"], [PROBABILITY_OUTPUT]),
        ]
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
