"""Tasks: one contract suite over every registered task, and the label mistakes each named before training."""

from __future__ import annotations

import json
from functools import reduce

import numpy as np
import pyarrow as pa
import pytest

from raymlops.errors import ConfigError
from raymlops.tasks import TASKS, Task, task_class
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.infer import LabelSummary, resolve_task, summarize_label
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask

RNG = np.random.default_rng(0)
LABELS = {
    "binary": pa.array(RNG.choice(["YES", "NO"], 400, p=[0.3, 0.7])),
    "multiclass": pa.array(RNG.choice(["setosa", "versicolor", "virginica"], 400)),
    "regression": pa.array(RNG.normal(50.0, 10.0, 400)),
}


def _summary(values: pa.Array, limit: int = 50, blocks: int = 1) -> LabelSummary:
    table = pa.table({"y": values})
    step = -(-len(table) // blocks)
    parts = [summarize_label(table.slice(i, step), "y", limit) for i in range(0, len(table), step)]
    return reduce(LabelSummary.merge, parts)


@pytest.fixture(params=sorted(TASKS))
def task_and_label(request: pytest.FixtureRequest) -> tuple[Task, pa.Array]:
    values = LABELS[request.param]
    task, _ = resolve_task(request.param, "y", _summary(values))
    assert isinstance(task, task_class(request.param))
    return task, values


def _predictions(task: Task, rows: int) -> np.ndarray:
    width = task.output().width
    if task.name == "regression":
        return RNG.normal(50.0, 10.0, rows)
    raw = RNG.random((rows, max(width, 2)))
    proba = raw / raw.sum(axis=1, keepdims=True)
    return proba[:, 1] if width == 1 else proba


def test_task_contract(task_and_label: tuple[Task, pa.Array]) -> None:
    task, values = task_and_label
    y = task.target(values).to_numpy()
    assert y.dtype == np.float32 and len(y) == len(values) and np.isfinite(y).all()
    pred = _predictions(task, len(y))
    metrics = task.metrics(y, pred, "test")
    assert {f"test/{m}" for m in task.directions} <= set(metrics)
    assert task.primary_metric in task.directions
    assert all(np.isfinite(v) for k, v in metrics.items() if k.rsplit("/", 1)[1] in task.directions)
    baseline = task.baseline_metrics(y[:300], y[300:], "test")
    assert baseline["test/rows"] == 100
    answers = task.answers(pred[:5])
    assert len(answers) == 5 and all(isinstance(a, dict) and a for a in answers)
    json.dumps(answers), json.dumps(task.describe())  # both go over HTTP and into lineage
    assert task.describe()["task"] == task.name
    assert task.loss() in ("bce", "cross_entropy", "mse", "huber")


def test_a_model_beats_the_baseline_only_when_it_is_better() -> None:
    task, _ = resolve_task("regression", "y", _summary(LABELS["regression"]))
    y = task.target(LABELS["regression"]).to_numpy()
    base = task.baseline_metrics(y, y, "test")["test/rmse"]
    assert task.metrics(y, y + 0.1, "test")["test/rmse"] < base < task.metrics(y, y * 2, "test")["test/rmse"]


def test_binary_answers_speak_the_labels_terms() -> None:
    task, why = resolve_task("auto", "y", _summary(LABELS["binary"]))
    assert task == BinaryTask(positive="YES", negative="NO") and "rarer" in why
    assert task.answers(np.array([0.9, 0.1])) == [
        {"probability": 0.9, "label": "YES"},
        {"probability": 0.1, "label": "NO"},
    ]
    assert task.target(pa.array(["YES", "NO"])).to_pylist() == [1.0, 0.0]


def test_multiclass_keeps_the_original_values() -> None:
    task, _ = resolve_task("auto", "y", _summary(LABELS["multiclass"], blocks=4))
    assert task == MulticlassTask(classes=("setosa", "versicolor", "virginica"))
    answer = task.answers(np.array([[0.1, 0.2, 0.7]]))[0]
    assert answer["label"] == "virginica" and answer["probabilities"]["setosa"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="not among the classes"):
        task.target(pa.array(["setosa", "daisy"]))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pa.array([True, False, True]), BinaryTask(positive=True, negative=False)),
        (pa.array([0, 1, 1, 0]), BinaryTask(positive=1, negative=0)),
        (pa.array([0.0, 1.0, 1.0]), BinaryTask(positive=1.0, negative=0.0)),
        (pa.array([1, 2, 3, 2, 1]), MulticlassTask(classes=(1, 2, 3))),
        (pa.array(np.arange(200)), RegressionTask()),
        (pa.array([0.5, 1.5, 2.5]), RegressionTask()),
    ],
)
def test_auto_reads_the_label(values: pa.Array, expected: Task) -> None:
    assert resolve_task("auto", "y", _summary(values, limit=50, blocks=2))[0] == expected


def test_threshold_and_positive_choose_the_positive_class() -> None:
    numeric = _summary(pa.array([1.0, 20.0, 30.0]))
    task, why = resolve_task("auto", "delay", numeric, threshold=15)
    assert task.target(pa.array([1.0, 20.0])).to_pylist() == [0.0, 1.0] and "delay > 15" in why
    flags = _summary(pa.array([0, 1, 0]))
    assert resolve_task("binary", "y", flags, positive="0")[0] == BinaryTask(positive=0, negative=1)


MISTAKES = [
    ("auto", pa.array([None, None], pa.string()), {}, "features.label.column", "null in every row"),
    ("auto", pa.array(["YES", "YES"]), {}, "features.label.column", "one value only"),
    ("auto", pa.array(["YES", "NO"]), {"positive": "Y"}, "features.label.positive", "['NO', 'YES']"),
    ("auto", pa.array(["YES", "NO"]), {"threshold": 0.5}, "features.label.threshold", "numeric label"),
    ("regression", pa.array(["a", "b"]), {}, "features.task", "numeric label"),
    ("auto", pa.array([f"c{i}" for i in range(60)]), {}, "features.max_classes", "more than 50"),
    ("binary", pa.array(["a", "b", "c"]), {}, "features.task", "two label values"),
    ("ordinal", pa.array(["a", "b"]), {}, "features.task", "is not a task"),
    ("multiclass", pa.array(["a", "b"]), {"positive": "a"}, "features.label.positive", "binary task"),
]


@pytest.mark.parametrize(("task", "values", "extra", "key", "message"), MISTAKES)
def test_label_mistakes_name_the_key_and_the_fix(
    task: str, values: pa.Array, extra: dict, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_task(task, "y", _summary(values), **extra)
    assert info.value.key == key and message in str(info.value)


def test_summary_merges_to_the_whole_and_forgets_past_its_limit() -> None:
    values = pa.array(RNG.integers(0, 7, 1000))
    assert _summary(values, blocks=5).counts == _summary(values).counts
    assert _summary(pa.array(np.arange(100)), limit=50, blocks=3).counts is None
