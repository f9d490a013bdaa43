"""Serving every task: one router app over real HTTP serves a binary (YES/NO string label), a multiclass
(string classes) and a regression version, each an ONNX graph of a plain XGBoost model (onnxmltools)
composed behind the project's preprocessing graph. Each answers in its task's shape on v1 and on OIP v2
(through tritonclient), takes feedback of its task's outcome type, and batch scoring writes its columns.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest

from raymlops.features.preprocess import FittedPreprocessor
from raymlops.serving import ModelSpec, deploy
from raymlops.tasks import Task, task_from_dict
from tests.conftest import free_port
from tests.task_tables import binary_yes_no, multiclass_strings, regression_numbers

PRE = FittedPreprocessor(
    numeric=("num_a", "num_b"),
    means=(0.0, 0.0),
    stds=(1.0, 1.0),
    categorical=("cat",),
    categories=(("x", "y", "z"),),
)
# name -> (the task as the registry records it, the table it is trained on)
TASKS: dict[str, tuple[dict[str, Any], Any]] = {
    "yesno": ({"task": "binary", "positive": "YES", "negative": "NO"}, binary_yes_no),
    "tiers": ({"task": "multiclass", "classes": ["bronze", "gold", "silver"]}, multiclass_strings),
    "price": ({"task": "regression", "loss": "mse"}, regression_numbers),
}
ROWS = [
    {"num_a": 1.5, "num_b": -0.5, "cat": "z"},
    {"num_a": -1.2, "num_b": None, "cat": "x"},
    {"num_a": 0.1, "num_b": 0.3, "cat": None},
    {"num_a": 2.5, "num_b": 1.0, "cat": "w"},  # a category not seen in training
]


@dataclass(frozen=True)
class Served:
    url: str
    port: int
    specs: dict[str, ModelSpec]


def _targets(task: Task, table: pa.Table) -> np.ndarray:
    return task.target(table["target"]).to_numpy()


def _graph(task: Task, table: pa.Table) -> Any:
    """A plain XGBoost model of ``task`` on the preprocessed table, as ONNX with one output: the task's
    (binary ``probability`` [N], multiclass ``probabilities`` [N, K], regression ``value`` [N])."""
    import xgboost
    from onnx import TensorProto, helper
    from onnxmltools import convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    x, y = PRE.transform(table), _targets(task, table)
    params = {"n_estimators": 20, "max_depth": 3, "n_jobs": 1}
    output = task.output()
    model = (
        xgboost.XGBRegressor(**params) if output.name == "value" else xgboost.XGBClassifier(**params)
    ).fit(x, y.astype(np.int64) if output.name != "value" else y)
    onx = convert_xgboost(
        model,
        initial_types=[("features", FloatTensorType([None, x.shape[1]]))],
        target_opset=15,  # onnxmltools' converters stop at 15
    )
    graph = onx.graph
    raw = [o.name for o in graph.output]  # classifiers: label, probabilities [N, K]; regressor: [N, 1]
    if output.name == "probability":  # the positive class's column
        graph.initializer.append(helper.make_tensor("positive", TensorProto.INT64, [], [1]))
        graph.node.append(helper.make_node("Gather", ["probabilities", "positive"], ["probability"], axis=1))
    elif output.name == "value":
        graph.initializer.append(helper.make_tensor("flat", TensorProto.INT64, [1], [-1]))
        graph.node.append(helper.make_node("Reshape", [raw[0], "flat"], ["value"]))
    shape = [None] if output.width == 1 else [None, output.width]
    while graph.output:  # the task's output alone ("probabilities" is onnxmltools' own name)
        graph.output.pop()
    graph.output.append(helper.make_tensor_value_info(output.name, TensorProto.FLOAT, shape))
    return onx


def direct(spec: ModelSpec, rows: list[dict[str, Any]]) -> np.ndarray:
    """onnxruntime on the same rows, feeds built by hand (not through the serving code)."""
    import onnxruntime as ort

    feeds: dict[str, np.ndarray] = {}
    for column in PRE.numeric:
        values = [math.nan if r[column] is None else r[column] for r in rows]
        feeds[column] = np.asarray(values, dtype=np.float32).reshape(-1, 1)
    for column in PRE.categorical:
        feeds[column] = np.asarray(["" if r[column] is None else r[column] for r in rows], object).reshape(
            -1, 1
        )
    session = ort.InferenceSession(spec.onnx_path, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([spec.task_obj.output().name], feeds)[0], np.float32)


@pytest.fixture(scope="module")
def served(ray_local: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One app, three names (one per task), each one version; Serve shut down afterwards."""
    import onnx
    from ray import serve

    from raymlops.models.export import compose_pipeline

    folder = tmp_path_factory.mktemp("task-models")
    specs = {}
    for name, (description, table_of) in TASKS.items():
        task = task_from_dict(description)
        path = folder / name / "model.onnx"  # a folder each: an explainer is found beside its graph
        path.parent.mkdir()
        table = table_of(600, seed=1)
        onnx.save(compose_pipeline(PRE, _graph(task, table)), str(path))
        if name == "tiers":  # explained per class
            from raymlops.evaluation.explain import OnnxExplainer

            background = table.select(list(PRE.input_columns)).slice(0, 20)
            OnnxExplainer(path, PRE.input_columns, background, max_background=20, task=task).save(
                path.parent / "explainer"
            )
        specs[name] = ModelSpec(
            name=name,
            version="1",
            onnx_path=str(path),
            data_version=f"data-{name}",
            input_columns=PRE.input_columns,
            task=description,
        )
    try:
        port = free_port()
        url = deploy(
            list(specs.values()),
            app_name="serving-tasks-test",
            host="127.0.0.1",
            port=port,
            timeout_s=90,
            prediction_log={"root": str(folder / "predlog"), "flush_rows": 1, "flush_interval_s": 0.2},
        )
        yield Served(url, port, specs)
    finally:
        serve.shutdown()


def test_v1_answers_in_each_tasks_shape(served: Served) -> None:
    answers = {}
    for name in served.specs:
        response = httpx.post(f"{served.url}/v1/models/{name}/predict", json={"records": ROWS}, timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["model-name"] == name and response.headers["data-version"] == f"data-{name}"
        answers[name] = response.json()["predictions"]
    # binary, a positive class: the probability of YES, the label in the label's own terms
    expected = direct(served.specs["yesno"], ROWS)
    assert expected.shape == (len(ROWS),)
    np.testing.assert_allclose([a["probability"] for a in answers["yesno"]], expected, atol=1e-6)
    assert [a["label"] for a in answers["yesno"]] == ["YES" if p >= 0.5 else "NO" for p in expected]
    assert {a["label"] for a in answers["yesno"]} == {"YES", "NO"}  # the rows reach both answers
    # multiclass: the likeliest class's value, and every class's probability by name
    expected = direct(served.specs["tiers"], ROWS)
    assert expected.shape == (len(ROWS), 3)
    classes = ["bronze", "gold", "silver"]
    for answer, row in zip(answers["tiers"], expected, strict=True):
        assert set(answer) == {"label", "probabilities"}
        assert answer["label"] == classes[int(row.argmax())]
        np.testing.assert_allclose([answer["probabilities"][c] for c in classes], row, atol=1e-6)
        assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    # regression: the value
    expected = direct(served.specs["price"], ROWS)
    assert [set(a) for a in answers["price"]] == [{"value"}] * len(ROWS)
    np.testing.assert_allclose([a["value"] for a in answers["price"]], expected, rtol=1e-6)
    assert 100 < np.mean(expected) < 300  # the target's scale, not a probability


def test_oip_v2_metadata_and_tritonclient_per_task(served: Served) -> None:
    tritonclient = pytest.importorskip("tritonclient.http")
    client = tritonclient.InferenceServerClient(f"127.0.0.1:{served.port}")
    outputs = {
        "yesno": {"name": "probability", "datatype": "FP32", "shape": [-1]},
        "tiers": {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        "price": {"name": "value", "datatype": "FP32", "shape": [-1]},
    }
    for name, spec in served.specs.items():
        assert client.get_model_metadata(name)["outputs"] == [outputs[name]]
        inputs = []
        for column, kind in PRE.input_columns.items():
            if kind == "float":
                values = np.asarray([math.nan if r[column] is None else r[column] for r in ROWS], np.float32)
            else:
                values = np.asarray([(r[column] or "").encode() for r in ROWS], dtype=object)
            tensor = tritonclient.InferInput(column, [len(ROWS), 1], "FP32" if kind == "float" else "BYTES")
            inputs.append(tensor.set_data_from_numpy(values.reshape(-1, 1), binary_data=name != "price"))
        asked = [tritonclient.InferRequestedOutput(outputs[name]["name"], binary_data=False)]
        result = client.infer(name, inputs, outputs=asked)
        got = result.as_numpy(outputs[name]["name"])
        expected = direct(spec, ROWS)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        output = result.get_output(outputs[name]["name"])
        if name == "tiers":  # the class of each column, for the client to name them
            assert json.loads(output["parameters"]["classes"]) == ["bronze", "gold", "silver"]
        elif name == "price":
            assert "parameters" not in output
    # an output this version does not have: 422 naming the one it has
    body = {"inputs": [{"name": "num_a", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    response = httpx.post(
        f"{served.url}/v2/models/price/infer", json={**body, "outputs": [{"name": "probability"}]}, timeout=30
    )
    assert response.status_code == 422 and "this model has one output, 'value'" in response.json()["error"]


def test_feedback_takes_each_tasks_outcome(served: Served) -> None:
    outcomes = {"yesno": ["YES", "NO"], "tiers": ["gold", "bronze"], "price": [212.5, 180]}
    for name, values in outcomes.items():
        response = httpx.post(
            f"{served.url}/v1/models/{name}/predict", json={"records": ROWS[:2]}, timeout=30
        )
        assert response.status_code == 200, response.text
        prediction_id = response.json()["prediction_id"]
        items = [
            {"prediction_id": prediction_id, "row": i, "outcome": v, "model": name}
            for i, v in enumerate(values)
        ]
        feedback = httpx.post(f"{served.url}/v1/feedback", json={"feedback": items}, timeout=30)
        assert feedback.status_code == 200, feedback.text
        assert feedback.json() == {"accepted": 2}


def test_explain_is_per_class_for_multiclass(served: Served) -> None:
    response = httpx.post(f"{served.url}/v1/models/tiers/explain", json={"records": ROWS[:2]}, timeout=120)
    assert response.status_code == 200, response.text
    body = response.json()
    expected = direct(served.specs["tiers"], ROWS[:2])
    classes = ["bronze", "gold", "silver"]
    for explanation, row in zip(body["explanations"], expected, strict=True):
        assert list(explanation["shap"]) == classes and list(explanation["prediction"]) == classes
        for k, name in enumerate(classes):
            shap = explanation["shap"][name]
            assert set(shap) == set(PRE.input_columns)
            assert explanation["prediction"][name] == pytest.approx(float(row[k]), abs=1e-5)
            # additive per class: the values and the base make that class's probability
            total = sum(shap.values()) + explanation["base_value"][name]
            assert total == pytest.approx(explanation["prediction"][name], abs=1e-4)


def test_openapi_answers_name_every_tasks_shape(served: Served) -> None:
    document = httpx.get(f"{served.url}/openapi.json", timeout=30).json()
    answer = document["paths"]["/v1/models/{name}/predict"]["post"]["responses"]["200"]
    rows = answer["content"]["application/json"]["schema"]["properties"]["predictions"]["items"]["anyOf"]
    assert [sorted(r["required"]) for r in rows] == [
        ["label", "probability"],
        ["label", "probabilities"],
        ["value"],
    ]


def test_batch_scoring_writes_each_tasks_columns(served: Served, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    import ray.data

    from raymlops.serving.batch_scorers import output_columns, score_to_parquet

    table = pa.Table.from_pylist(ROWS)
    columns = {
        "yesno": ["probability", "label"],
        "tiers": ["label", "probability_bronze", "probability_gold", "probability_silver"],
        "price": ["value"],
    }
    for name, spec in served.specs.items():
        assert output_columns(spec.task).names == columns[name]
        rows, files = score_to_parquet(
            ray.data.from_arrow(table),
            spec.onnx_path,
            PRE.input_columns,
            str(tmp_path / name),
            task=spec.task,
            keep_columns=["num_a"],
            concurrency=1,
        )
        scored = pq.read_table(files).sort_by([("num_a", "ascending")]) if rows else None
        assert rows == len(ROWS) and scored is not None
        assert scored.column_names == ["num_a", *columns[name]]
        order = np.argsort(table["num_a"].to_numpy(), kind="stable")
        expected = direct(spec, ROWS)[order]
        if name == "yesno":
            np.testing.assert_allclose(scored["probability"].to_numpy(), expected, atol=1e-6)
            assert scored["label"].to_pylist() == ["YES" if p >= 0.5 else "NO" for p in expected]
        elif name == "tiers":
            probabilities = np.stack([scored[c].to_numpy() for c in columns[name][1:]], axis=1)
            np.testing.assert_allclose(probabilities, expected, atol=1e-6)
            classes = ["bronze", "gold", "silver"]
            assert scored["label"].to_pylist() == [classes[i] for i in expected.argmax(axis=1)]
        else:
            assert scored.schema.field("value").type == pa.float32()
            np.testing.assert_allclose(scored["value"].to_numpy(), expected, rtol=1e-6)


def test_a_graph_that_is_not_its_tasks_is_refused_at_load(served: Served) -> None:
    from raymlops.errors import DeploymentError
    from raymlops.serving.onnx_model import LoadedModel

    tiers, price = served.specs["tiers"], served.specs["price"]
    four = dataclasses.replace(tiers, task={"task": "multiclass", "classes": ["a", "b", "c", "d"]})
    with pytest.raises(DeploymentError, match=r"output 'probabilities' has shape \[None, 3\].*\[N, 4\]"):
        LoadedModel(four)
    with pytest.raises(DeploymentError, match="an output 'probability' \\(its task 'binary'\\)"):
        LoadedModel(dataclasses.replace(price, task={}))  # the legacy binary task
