"""The task contract: what every room may ask of the problem's shape."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

__all__ = ["OutputSpec", "Task", "confusion_picture", "scatter_picture"]


@dataclass(frozen=True)
class OutputSpec:
    """The exported graph's model output: its name and its width per row (1, or the classes)."""

    name: str
    width: int


class Task(abc.ABC):
    """One problem shape. Subclasses are small frozen values: they carry what was learnt about the label
    (the positive class, the class names) and record themselves in lineage through ``describe``."""

    name: ClassVar[str]
    torch_loss: ClassVar[str]  # the torch family's loss
    xgboost_objective: ClassVar[str]  # the XGBoost family's objective
    primary_metric: ClassVar[str]  # what search maximises or minimises, and gates default to
    directions: ClassVar[Mapping[str, bool]]  # metric -> higher is better

    @abc.abstractmethod
    def target(self, values: pa.Array) -> pa.Array:
        """The training target from the label column's values (nulls already dropped)."""

    @abc.abstractmethod
    def output(self) -> OutputSpec:
        """The model output the graph exports."""

    @abc.abstractmethod
    def metrics(self, y_true: np.ndarray, pred: np.ndarray, split: str) -> dict[str, float]:
        """``<split>/<metric>`` figures of predictions ``pred`` (the model output) against targets."""

    @abc.abstractmethod
    def baseline(self, y_train: np.ndarray) -> np.ndarray:
        """The constant prediction (one output row) a model must beat, fitted on the train targets."""

    @abc.abstractmethod
    def answers(self, pred: np.ndarray, threshold: float | None = None) -> list[dict[str, Any]]:
        """The v1 answer fields of each row; ``threshold``: the serving decision threshold (binary)."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """What lineage and the model card record: the name and what was learnt about the label."""

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Task:
        """The task ``describe`` recorded (lineage, the registry's ``raymlops.task`` tag)."""
        return cls()

    def loss(self) -> str:
        """The torch family's loss (a task may let config choose among several)."""
        return self.torch_loss

    def split_kind(self) -> str:
        """The hash split a table without a time column gets (``raymlops init``): random here;
        classification keeps each class's share with ``stratified``."""
        return "random"

    def unknown_values(self, values: Sequence[Any]) -> list[Any]:
        """Label values (of a valid or test split) this task cannot turn into a target: classes never
        seen in train. None here: every value of a numeric label is a target."""
        return []

    def constant_prediction(self, target_mean: float, label_counts: Mapping[Any, int] | None) -> np.ndarray:
        """The constant baseline from the train split's summary: the mean target (binary: the positive
        rate; regression: the mean); multiclass overrides it with the class shares."""
        return np.array([target_mean])

    def higher_is_better(self, metric: str) -> bool:
        return self.directions[metric.rsplit("/", 1)[-1]]

    def baseline_metrics(self, y_train: np.ndarray, y_true: np.ndarray, split: str) -> dict[str, float]:
        """The metrics of the constant baseline on ``y_true``."""
        constant = np.asarray(self.baseline(y_train), dtype=np.float64).reshape(1, -1)
        pred = np.repeat(constant, len(y_true), axis=0)
        return self.metrics(y_true, pred[:, 0] if self.output().width == 1 else pred, split)

    # Evaluation and the model card: the gates, the champion comparison and the picture a task calls for.
    shap_spaces: ClassVar[Mapping[str, str]] = {"tree": "log_odds", "permutation": "probability"}

    def default_gates(self, split: str) -> list[str]:
        """The gates when ``evaluate.gates`` is null: the primary metric beats the constant baseline."""
        op = ">" if self.higher_is_better(self.primary_metric) else "<"
        return [f"{split}/{self.primary_metric} {op} baseline"]

    def champion_tolerance(self, split: str, champion: Mapping[str, float]) -> dict[str, float]:
        """``evaluate.champion.max_regression`` when null: how much worse than the champion (its
        ``champion`` metrics) the primary metric may be; 0.02 suits metrics bounded by 0 and 1."""
        return {f"{split}/{self.primary_metric}": 0.02}

    def comparable(self, other: Task) -> bool:
        """Whether a model of task ``other`` answers the same question, so their metrics compare."""
        return type(other) is type(self) and other.output() == self.output()

    def card_picture(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, Any] | None:
        """The model card's picture of held-out predictions (plain data; see :func:`confusion_picture`
        and :func:`scatter_picture`), or None."""
        return None

    # Distributed evaluation: mergeable metric partials per block of held-out rows (tasks/partial_metrics).
    picture_sample_rows: ClassVar[int] = 0  # rows of a bounded sample the card's picture needs (scatter)

    def supports_partials(self) -> bool:
        """Whether this task computes :meth:`metric_partials`; a task that does not is evaluated on the
        gathered held-out split, as on the local path."""
        return False

    def metric_partials(self, y_true: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        """Figures of one block of rows that merge (:meth:`merge_partials`) into what :meth:`metrics`
        needs; exactness is each task's to state."""
        raise NotImplementedError(f"the {self.name} task computes no metric partials")

    def merge_partials(self, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Two blocks' partials as one. This default: each array added."""
        from raymlops.tasks.partial_metrics import add_partials

        return add_partials(a, b)

    def metrics_from_partials(self, parts: Mapping[str, np.ndarray], split: str) -> dict[str, float]:
        """:meth:`metrics` of all the rows whose partials were merged into ``parts``."""
        raise NotImplementedError(f"the {self.name} task computes no metric partials")

    def metric_bounds(self, parts: Mapping[str, np.ndarray], split: str) -> dict[str, float]:
        """The most each approximate metric of :meth:`metrics_from_partials` can differ from the exact
        one (same names); exact metrics are not listed. This default: every metric is exact."""
        return {}

    def card_picture_from_partials(
        self, parts: Mapping[str, np.ndarray], sample: tuple[np.ndarray, np.ndarray] | None
    ) -> dict[str, Any] | None:
        """:meth:`card_picture` from merged partials, or from ``sample`` (actual, predicted: a bounded
        seeded sample of :attr:`picture_sample_rows` rows) where the picture is of rows."""
        return None

    # Serving: the answer beyond v1's ``answers`` (the OpenAPI schema, OIP v2, batch scoring, shadows).
    @classmethod
    def answer_schema(cls) -> dict[str, Any]:
        """JSON schema of one v1 answer row (``answers``), for the serving OpenAPI document."""
        return {"type": "object"}

    def oip_parameters(self) -> dict[str, str | float | bool]:
        """The OIP v2 output's ``parameters`` (OIP allows strings, numbers and booleans only)."""
        return {}

    def output_columns(self, pred: np.ndarray, threshold: float | None = None) -> dict[str, pa.Array]:
        """Batch scoring's columns for ``pred`` (rows of the task's output), in order; typed even
        when empty. This default: the output as it is, one float32 column per output column."""
        name, width = self.output().name, self.output().width
        values = np.asarray(pred, np.float32).reshape(-1, width)
        if width == 1:
            return {name: pa.array(values[:, 0])}
        return {f"{name}_{i}": pa.array(values[:, i]) for i in range(width)}

    def agreement(
        self,
        served: np.ndarray,
        shadow: np.ndarray,
        served_threshold: float | None = None,
        shadow_threshold: float | None = None,
    ) -> tuple[float, float]:
        """(share of rows whose answers agree, mean absolute difference of the predictions) between
        a served and a shadow version's predictions of the same rows. This default: the answers
        (``answers``) are equal."""
        _check_same_shape(served, shadow)
        same = [
            a == b
            for a, b in zip(
                self.answers(served, served_threshold), self.answers(shadow, shadow_threshold), strict=True
            )
        ]
        return float(np.mean(same)), _mean_abs_diff(served, shadow)

    # Monitoring: feedback's outcomes as targets, the live metrics, the statistic drift and rollout compare.
    def live_metrics(self) -> tuple[str, ...]:
        """The metrics the monitor computes from feedback (leaf names of ``metrics``); the primary first."""
        return (self.primary_metric, *(m for m in self.directions if m != self.primary_metric))

    def prediction_kind(self) -> str:
        """What one row's prediction is, for the prediction log, drift and rollout: ``"probability"``
        (of the positive class), ``"classes"`` (a probability per class) or ``"value"`` (a number)."""
        spec = self.output()
        if spec.width > 1:
            return "classes"
        return "probability" if spec.name == "probability" else "value"

    @property
    def prediction_is_categorical(self) -> bool:
        """Whether ``prediction_statistic`` is a class (drift compares class shares) or a number."""
        return self.prediction_kind() == "classes"

    def prediction_statistic(self, pred: np.ndarray) -> np.ndarray:
        """One float64 per row that drift and rollout compare: the probability, the value, or the
        index of the likeliest class."""
        values = np.asarray(pred, np.float64)
        if values.ndim == 2:
            return values.argmax(axis=1).astype(np.float64)
        return values.reshape(-1)

    def outcome_targets(self, values: Sequence[Any]) -> np.ndarray:
        """Feedback's outcomes (JSON scalars: bool, number or string) as targets, float64 as ``target``
        makes them. Raises ValueError naming the values that are no outcome of this task. This default:
        numbers (a numeric string too)."""
        out = np.empty(len(values), np.float64)
        unknown = []
        for i, value in enumerate(values):
            number = _number(value)
            out[i] = np.nan if number is None else number
            if number is None:
                unknown.append(value)
        if unknown:
            raise ValueError(f"outcome(s) {_shown(unknown)} are not numbers: send the true value.")
        return out

    def label_values(self, targets: np.ndarray) -> pa.Array:
        """Label-column values whose ``target`` is ``targets`` (what ``outcome_targets`` made of feedback):
        how a labelled live row joins the training table. This default: the target is the label."""
        return pa.array(np.asarray(targets, np.float64))


def confusion_picture(labels: list[str], actual: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    """A confusion matrix: ``counts[i][j]`` rows of class ``labels[i]`` predicted as ``labels[j]``."""
    k = len(labels)
    flat = np.asarray(actual, np.int64) * k + np.asarray(predicted, np.int64)
    counts = np.bincount(flat, minlength=k * k).reshape(k, k)
    return {"kind": "confusion_matrix", "labels": list(labels), "counts": counts.tolist()}


def scatter_picture(
    actual: np.ndarray, predicted: np.ndarray, max_points: int = 500, seed: int = 0
) -> dict[str, Any]:
    """Predicted against actual values, at most ``max_points`` of them (a seeded sample)."""
    y, p = np.asarray(actual, np.float64).reshape(-1), np.asarray(predicted, np.float64).reshape(-1)
    keep = np.arange(len(y))
    if len(y) > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(len(y), size=max_points, replace=False))
    return {
        "kind": "predicted_vs_actual",
        "rows": len(y),
        "actual": [round(float(v), 6) for v in y[keep]],
        "predicted": [round(float(v), 6) for v in p[keep]],
    }


def _check_same_shape(served: np.ndarray, shadow: np.ndarray) -> None:
    if served.shape != shadow.shape or served.size == 0:
        raise ValueError(f"cannot compare answers of shapes {served.shape} and {shadow.shape}")


def _mean_abs_diff(served: np.ndarray, shadow: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(served, np.float64) - np.asarray(shadow, np.float64))))


def _number(value: Any) -> float | None:
    """A finite number from a JSON scalar (a numeric string too); None for anything else (bools too)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if np.isfinite(number) else None


def _shown(values: Sequence[Any], limit: int = 5) -> str:
    """The first distinct ``values`` for an error message."""
    distinct = list(dict.fromkeys(repr(v) for v in values))
    more = f" (+{len(distinct) - limit} more)" if len(distinct) > limit else ""
    return "[" + ", ".join(distinct[:limit]) + "]" + more
