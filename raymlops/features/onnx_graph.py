"""The fitted preprocessing as an ONNX graph: one input per raw column, output ``features``.

Ray Data preprocessors have no ONNX export; this builds it from the fitted state with
``onnx.helper`` so that serving takes raw columns and cannot skew from training.
"""

from __future__ import annotations

import numpy as np

from raymlops.features.preprocess import FittedPreprocessor

__all__ = ["FEATURES_OUTPUT", "preprocessing_graph"]

FEATURES_OUTPUT = "features"


def preprocessing_graph(pre: FittedPreprocessor, *, opset: int, ml_opset: int = 3, ir_version: int = 8):
    """Build the ONNX model (``onnx.ModelProto``) of ``pre``; numeric inputs are float32 [N, 1],
    categorical inputs string [N, 1]."""
    from onnx import TensorProto, helper, numpy_helper

    inputs, nodes, initializers, parts = [], [], [], []
    if pre.numeric:
        inputs += [helper.make_tensor_value_info(c, TensorProto.FLOAT, [None, 1]) for c in pre.numeric]
        initializers += [
            numpy_helper.from_array(np.asarray([pre.means], dtype=np.float32), "num_mean"),
            numpy_helper.from_array(np.asarray([pre.stds], dtype=np.float32), "num_std"),
        ]
        nodes += [
            helper.make_node("Concat", list(pre.numeric), ["num_raw"], axis=1),
            helper.make_node("IsNaN", ["num_raw"], ["num_isnan"]),
            helper.make_node("Where", ["num_isnan", "num_mean", "num_raw"], ["num_filled"]),
            helper.make_node("Sub", ["num_filled", "num_mean"], ["num_centred"]),
            helper.make_node("Div", ["num_centred", "num_std"], ["num_scaled"]),
        ]
        parts.append("num_scaled")
    for column, values in zip(pre.categorical, pre.categories, strict=True):
        inputs.append(helper.make_tensor_value_info(column, TensorProto.STRING, [None, 1]))
        if not values:
            continue  # no frequent value: the column contributes no feature
        nodes += [
            # zeros=1: a value not seen in training encodes as all zeros instead of failing.
            helper.make_node(
                "OneHotEncoder",
                [column],
                [f"{column}_onehot3d"],
                domain="ai.onnx.ml",
                cats_strings=list(values),
                zeros=1,
            ),
            helper.make_node("Flatten", [f"{column}_onehot3d"], [f"{column}_onehot"], axis=1),
        ]
        parts.append(f"{column}_onehot")
    nodes.append(helper.make_node("Concat", parts, [FEATURES_OUTPUT], axis=1))
    output = helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, [None, pre.num_features])
    graph = helper.make_graph(nodes, "raymlops_preprocessing", inputs, [output], initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", ml_opset)]
    )
    model.ir_version = ir_version
    return model
