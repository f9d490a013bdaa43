"""Rollout judges each task's prediction statistic against the champion's, from the router's own rolling
statistics (``RollingStats`` fed with the predictions each version answered):

- binary: the mean probability (as before tasks existed);
- regression: the mean value, in champion standard deviations (``max_value_shift_std``);
- multiclass: the total-variation distance of the answered classes' shares (``max_class_share_shift``).
"""

from __future__ import annotations

import numpy as np
import pytest

from raymlops.serving.metrics import MetricDef, RollingStats, ServingMetrics
from raymlops.serving.rollout import RolloutPolicy, judge
from raymlops.tasks.binary import BinaryTask
from raymlops.tasks.multiclass import MulticlassTask
from raymlops.tasks.regression import RegressionTask

POLICY = RolloutPolicy(min_requests=50, min_step_s=0.0)
REGRESSION = RegressionTask()
MULTICLASS = MulticlassTask(classes=("setosa", "versicolor", "virginica"))


def served(predictions: list[np.ndarray]) -> dict:
    """The router's served-route statistics of a version that answered ``predictions``, one per request."""
    stats = RollingStats(window=1000)
    for pred in predictions:
        stats.record(0.002, 200, pred)
    return stats.snapshot()


def values(rng: np.random.Generator, mean: float, std: float, requests: int = 200) -> list[np.ndarray]:
    return [rng.normal(mean, std, 3).astype(np.float32) for _ in range(requests)]


def classes(rng: np.random.Generator, shares: list[float], requests: int = 200) -> list[np.ndarray]:
    """Requests of 3 rows whose answered class is drawn with ``shares`` (softmax rows, float32)."""
    out = []
    for _ in range(requests):
        chosen = rng.choice(len(shares), 3, p=shares)
        logits = rng.normal(0, 0.3, (3, len(shares)))
        logits[np.arange(3), chosen] += 3.0
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        out.append(proba.astype(np.float32))
    return out


def verdict(candidate: dict, champion: dict, task: object) -> object:
    return judge(candidate, champion, POLICY, requests_at_step=200, seconds_at_step=10.0, task=task)


def test_the_window_summarises_each_tasks_predictions() -> None:
    rng = np.random.default_rng(0)
    requests = values(rng, 100.0, 20.0)
    window = served(requests)["window"]
    rows = np.concatenate(requests).astype(np.float64)
    assert window["prediction"]["rows"] == rows.size
    assert window["prediction"]["mean"] == pytest.approx(rows.mean(), rel=1e-6)
    assert window["prediction"]["std"] == pytest.approx(rows.std(), rel=1e-4)
    assert window["prediction"]["class_shares"] is None
    # Mean over requests of each request's mean: what binary rollout has always compared.
    assert window["mean_probability"] == pytest.approx(np.mean([r.mean() for r in requests]), rel=1e-6)

    answered = classes(rng, [0.6, 0.3, 0.1])
    window = served(answered)["window"]
    chosen = np.concatenate([a.argmax(axis=1) for a in answered])
    expected = np.bincount(chosen, minlength=3) / chosen.size
    assert window["prediction"]["class_shares"] == pytest.approx(expected.tolist())
    assert window["mean_probability"] is None  # no single probability to average


def test_regression_candidate_judged_by_its_mean_value_in_champion_stds() -> None:
    rng = np.random.default_rng(1)
    champion = served(values(rng, 250.0, 40.0))
    close = verdict(served(values(rng, 255.0, 40.0)), champion, REGRESSION)
    assert close.action == "advance", close
    assert close.figures["value_shift_std"] < POLICY.max_value_shift_std
    far = verdict(served(values(rng, 290.0, 40.0)), champion, REGRESSION)  # one std higher
    assert far.action == "rollback"
    assert far.figures["value_shift_std"] == pytest.approx(1.0, abs=0.15)
    assert "champion std apart" in far.reasons[0]
    # The same shift judged as a probability (no task: the legacy binary rule) would not fit values:
    # a regression candidate must be judged by the regression rule, which the task selects.
    assert verdict(served(values(rng, 255.0, 40.0)), champion, None).action == "rollback"


def test_multiclass_candidate_judged_by_the_total_variation_of_class_shares() -> None:
    rng = np.random.default_rng(2)
    champion = served(classes(rng, [0.5, 0.3, 0.2]))
    same = verdict(served(classes(rng, [0.5, 0.3, 0.2])), champion, MULTICLASS)
    assert same.action == "advance", same
    assert same.figures["class_share_distance"] < POLICY.max_class_share_shift
    shifted = verdict(served(classes(rng, [0.2, 0.3, 0.5])), champion, MULTICLASS)
    assert shifted.action == "rollback"
    mine, theirs = shifted.figures["candidate_class_shares"], shifted.figures["champion_class_shares"]
    distance = 0.5 * sum(abs(a - b) for a, b in zip(mine, theirs, strict=True))
    assert shifted.figures["class_share_distance"] == pytest.approx(distance, abs=1e-4)
    assert distance == pytest.approx(0.3, abs=0.06) and "total variation" in shifted.reasons[0]


def test_binary_candidate_judged_by_mean_probability_as_before() -> None:
    rng = np.random.default_rng(3)
    task = BinaryTask(positive="YES", negative="NO")

    def probabilities(mean: float) -> list[np.ndarray]:
        return [np.clip(rng.normal(mean, 0.05, 4), 0, 1).astype(np.float32) for _ in range(200)]

    champion = served(probabilities(0.3))
    assert verdict(served(probabilities(0.32)), champion, task).action == "advance"
    assert verdict(served(probabilities(0.32)), champion, None).action == "advance"  # legacy: the same
    far = verdict(served(probabilities(0.5)), champion, task)
    assert far.action == "rollback" and "mean prediction" in far.reasons[0]


def test_rollout_settings_of_every_task_come_from_config() -> None:
    policy = RolloutPolicy.from_config({"max_value_shift_std": 0.25, "max_class_share_shift": 0.05})
    assert (policy.max_value_shift_std, policy.max_class_share_shift, policy.max_mean_shift) == (
        0.25,
        0.05,
        0.1,
    )


class Recorder:
    def __init__(self, definition: MetricDef) -> None:
        self.calls: list[tuple[str, float, dict]] = []

    def inc(self, value: float, tags: dict) -> None:
        self.calls.append(("inc", value, dict(tags)))

    def observe(self, value: float, tags: dict) -> None:
        self.calls.append(("observe", value, dict(tags)))

    def set(self, value: float, tags: dict) -> None:
        self.calls.append(("set", value, dict(tags)))


def test_serving_metrics_count_answered_classes_and_leave_values_out_of_the_probability_histogram() -> None:
    recorders: dict[str, Recorder] = {}

    def factory(definition: MetricDef) -> Recorder:
        recorders[definition.name] = Recorder(definition)
        return recorders[definition.name]

    metrics = ServingMetrics(factory)
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1]], np.float32)
    metrics.request("iris", "1", "served", 0.001, probabilities=proba, task=MULTICLASS)
    metrics.request("price", "1", "served", 0.001, probabilities=np.array([250.0, 310.0]), task=REGRESSION)
    counted = {(c[2]["class_index"], c[1]) for c in recorders["raymlops_predicted_class_total"].calls}
    assert counted == {("0", 2), ("1", 1)}
    assert recorders["raymlops_prediction_probability"].calls == []  # values are no probabilities
