"""A version folder as an MLflow model (raymlops.registry.mlflow_model), loaded by MLflow itself from a real
folder: the signature and input example; predict answers as the v1 router does for the same records; an
encrypted graph loads with the KEK in the environment and is refused without it; a tampered graph is
refused; the CUDA provider asked for on a machine without one is refused, not silently run on CPU.
The three tasks through the register stage, Serve and ``mlflow models serve``:
tests/e2e/test_init_outside_repo.py.
"""

from __future__ import annotations

import base64
import secrets
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raymlops.errors import ConfigError, IntegrityError
from raymlops.security.crypto import Keyring, write_encrypted
from raymlops.security.integrity import digest_bytes

COLUMNS = {"distance": "float", "origin": "string"}
TASK = {"task": "binary", "positive": "late", "negative": "on time"}


def tiny_graph() -> bytes:
    """distance -> sigmoid(distance / 1000) as ``probability``; ``origin`` is an input it does not read."""
    from onnx import TensorProto, helper, numpy_helper

    model = helper.make_model(
        helper.make_graph(
            [
                helper.make_node("Mul", ["distance", "scale"], ["logit"]),
                helper.make_node("Sigmoid", ["logit"], ["probability"]),
            ],
            "tiny",
            [
                helper.make_tensor_value_info("distance", TensorProto.FLOAT, [None, 1]),
                helper.make_tensor_value_info("origin", TensorProto.STRING, [None, 1]),
            ],
            [helper.make_tensor_value_info("probability", TensorProto.FLOAT, [None, 1])],
            [numpy_helper.from_array(np.asarray(1e-3, dtype=np.float32), "scale")],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    return model.SerializeToString()


def _version_folder(tmp_path: Path, graph: bytes, rows: list[dict]) -> Path:
    """A model folder as the register stage leaves it: model.onnx and the MLflow files beside it."""
    from raymlops.registry.mlflow_model import example_rows, write_mlflow_model

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(graph)
    files = write_mlflow_model(
        tmp_path / "mlflow",
        name="flights",
        version="3",
        input_columns=COLUMNS,
        task=TASK,
        digest=digest_bytes(graph),
        example_rows=example_rows(rows, COLUMNS) if rows else [],
    )
    for path in files:
        shutil.copy(path, folder / path.name)
    return folder


def _v1_answers(folder: Path, records: list[dict]) -> list[dict]:
    """What the router answers for ``records``: the v1 protocol's checks, the session, its answer."""
    from raymlops.serving.onnx_model import LoadedModel
    from raymlops.serving.protocols.v1 import V1, records_to_inputs
    from raymlops.serving.spec import ModelSpec

    spec = ModelSpec("flights", "3", str(folder / "model.onnx"), "", COLUMNS, task=TASK)
    model = LoadedModel(spec)
    probabilities = model.predict_inputs(records_to_inputs(records, COLUMNS, 100))
    return V1().answer("flights", spec, "id", probabilities, records)["predictions"]


def test_a_version_folder_is_an_mlflow_model_answering_as_the_v1_router(tmp_path: Path) -> None:
    import mlflow.pyfunc
    from mlflow.models import Model

    rows = [
        {"distance": None, "origin": "EWR", "year": 2013},  # incomplete: after the complete rows
        {"distance": 1400, "origin": "JFK", "year": 2013},  # an int: the example holds the signature's double
        {"distance": 200.0, "origin": "LGA", "year": 2013},
    ]
    folder = _version_folder(tmp_path, tiny_graph(), rows)
    meta = Model.load(folder / "MLmodel")
    assert meta.flavors["python_function"]["loader_module"] == "raymlops.registry.mlflow_model"
    schema = meta.get_input_schema()
    assert [(c.name, c.type.name) for c in schema.inputs] == [("distance", "double"), ("origin", "string")]
    example = meta.load_input_example(str(folder))
    assert example.to_dict(orient="records")[:2] == [
        {"distance": 1400.0, "origin": "JFK"},
        {"distance": 200.0, "origin": "LGA"},
    ]

    model = mlflow.pyfunc.load_model(str(folder))
    frame = pd.DataFrame({"distance": [1400.0, 3.0, 200.0], "origin": ["JFK", None, "LGA"]})
    records = [
        {"distance": 1400.0, "origin": "JFK"},
        {"distance": 3.0, "origin": None},
        {"distance": 200.0, "origin": "LGA"},
    ]
    answers = model.predict(frame)
    assert answers == _v1_answers(folder, records)
    expected = 1 / (1 + np.exp(-np.array([1.4, 0.003, 0.2])))
    assert [a["probability"] for a in answers] == pytest.approx(expected, abs=1e-6)
    assert [a["label"] for a in answers] == ["late", "late", "late"]  # the task's class names, as served
    assert model.predict(records) == answers  # the v1 records themselves
    with pytest.raises(Exception, match="origin"):  # a required raw column missing: named
        model.predict(pd.DataFrame({"distance": [1.0]}))


def test_an_encrypted_version_loads_with_the_kek_in_the_environment_and_is_refused_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    from raymlops.security import crypto

    graph = tiny_graph()
    folder = _version_folder(tmp_path, graph, [])
    assert not (folder / "input_example.json").exists()  # an encrypting job writes no example rows
    key_id = f"k{secrets.token_hex(4)}"  # an id no Ray cluster of this session holds
    kek = f"{key_id}:{base64.b64encode(secrets.token_bytes(32)).decode()}"
    write_encrypted(folder / "model.onnx", graph, Keyring.parse(kek, "test"))
    assert (folder / "model.onnx").read_bytes() != graph
    monkeypatch.setattr(crypto, "_ACTIVE", None)  # no job's keyring in this process: the environment's
    frame = pd.DataFrame({"distance": [500.0], "origin": ["JFK"]})

    monkeypatch.setenv("RAYMLOPS_KEK", kek)
    answer = mlflow.pyfunc.load_model(str(folder)).predict(frame)
    assert answer[0]["probability"] == pytest.approx(1 / (1 + np.exp(-0.5)), abs=1e-6)

    monkeypatch.delenv("RAYMLOPS_KEK")
    with pytest.raises(ConfigError, match=f"encrypted under KEK '{key_id}'") as refused:
        mlflow.pyfunc.load_model(str(folder))
    assert refused.value.key == "security.encryption.kek_file"

    # Bytes that are not the registered graph (the recorded digest in MLmodel) are refused too.
    (folder / "model.onnx").write_bytes(graph.replace(b"tiny", b"tinY"))
    with pytest.raises(IntegrityError, match="does not match its recorded digest"):
        mlflow.pyfunc.load_model(str(folder))


def test_the_cuda_provider_asked_for_and_not_loaded_is_refused_by_serving_and_batch_scoring(
    tmp_path: Path,
) -> None:
    import torch

    from raymlops.serving.batch_scorers import _OnnxScorer
    from raymlops.serving.onnx_model import LoadedModel
    from raymlops.serving.spec import ModelSpec

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: tests/integration/test_gpu.py checks the CUDA session")
    graph = tiny_graph()
    path = tmp_path / "model.onnx"
    path.write_bytes(graph)
    spec = ModelSpec("flights", "3", str(path), "", COLUMNS, task=TASK)
    with pytest.raises(ConfigError, match="CUDAExecutionProvider") as serving:
        LoadedModel(spec, use_gpu=True)
    assert serving.value.key == "serve.use_gpu" and "['CPUExecutionProvider']" in str(serving.value)
    with pytest.raises(ConfigError, match="CUDAExecutionProvider") as batch:
        _OnnxScorer(graph, COLUMNS, 0.5, True, 1, 100, None, TASK)
    assert batch.value.key == "use_gpu"
    assert LoadedModel(spec).session.get_providers() == ["CPUExecutionProvider"]  # use_gpu=False: CPU
