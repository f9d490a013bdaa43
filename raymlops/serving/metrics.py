"""Serving metrics: Prometheus series via ``ray.util.metrics``, and rolling stats per version.

Two views of the same events:

- ``ServingMetrics`` records Prometheus series (exported by Ray's metrics agent, aggregated over
  replicas and nodes): the names, kinds and label sets are the ``METRICS`` table below.
- ``StatsBook`` keeps this replica's last N requests per (model, version, route) in memory, for
  ``GET /v1/models/{name}/stats`` (the rollout controller polls it; see ``StatsBook.snapshot``).

Per request the router makes three to five metric calls (about 6 µs each) and one deque append, so
the accounting stays far below the 1 ms budget for the router's added latency.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from raymlops.tasks.base import Task

__all__ = [
    "METRICS",
    "ROUTES",
    "MetricDef",
    "RollingStats",
    "ServingMetrics",
    "StatsBook",
]

ROUTES = ("served", "shadow")
# Seconds; the router's own work is sub-millisecond, a shadow or a large batch can take seconds.
LATENCY_BOUNDARIES_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Upper bounds of probability buckets (Ray refuses a boundary of 0; [0, 0.05] is the first bucket).
PROBABILITY_BOUNDARIES = tuple(round(0.05 * i, 2) for i in range(1, 21))
AGREEMENT_BOUNDARIES = (0.5, 0.8, 0.9, 0.95, 0.99, 1.0)
# A request's probabilities enter the distribution histogram as at most this many evenly spaced rows:
# a 10,000-row request must not cost 10,000 metric calls.
MAX_OBSERVED_ROWS = 32


@dataclass(frozen=True)
class MetricDef:
    """One exported series: its Prometheus name, kind, help text, label set and histogram buckets."""

    name: str
    kind: str  # "counter" | "histogram" | "gauge"
    description: str
    tag_keys: tuple[str, ...]
    boundaries: tuple[float, ...] = ()


METRICS = (
    MetricDef(
        "raymlops_requests_total",
        "counter",
        "Requests scored, by model, version and route (served: answered; shadow: mirrored, discarded).",
        ("model", "version", "route"),
    ),
    MetricDef(
        "raymlops_request_errors_total",
        "counter",
        "Requests that failed after a version was chosen, by HTTP status code.",
        ("model", "version", "route", "code"),
    ),
    MetricDef(
        "raymlops_request_latency_seconds",
        "histogram",
        "Handler time per request, body read included (served), or the shadow model's time (shadow).",
        ("model", "version", "route"),
        LATENCY_BOUNDARIES_S,
    ),
    MetricDef(
        "raymlops_prediction_probability",
        "histogram",
        f"Served probabilities (up to {MAX_OBSERVED_ROWS} evenly spaced rows per request).",
        ("model", "version"),
        PROBABILITY_BOUNDARIES,
    ),
    MetricDef(
        "raymlops_predicted_class_total",
        "counter",
        f"Multiclass: served rows by the class answered, its index in the task's classes (up to "
        f"{MAX_OBSERVED_ROWS} evenly spaced rows per request); the class shares of the traffic.",
        ("model", "version", "class_index"),
    ),
    MetricDef(
        "raymlops_routing_weight",
        "gauge",
        "Share of the model's traffic routed to the version (weights normalised to sum to 1).",
        ("model", "version"),
    ),
    MetricDef(
        "raymlops_shadow_agreement",
        "histogram",
        "Per shadowed request, the share of rows whose shadow label equals the served label.",
        ("model", "version"),
        AGREEMENT_BOUNDARIES,
    ),
    MetricDef(
        "raymlops_shadow_dropped_total",
        "counter",
        "Sampled shadow calls dropped because shadow_max_in_flight calls were already running.",
        ("model", "version"),
    ),
    MetricDef(
        "raymlops_ood_rows_total",
        "counter",
        "Request rows with a value outside the version's training profile, by the column flagged "
        "(a row flagged in two columns counts once in each).",
        ("model", "version", "column"),
    ),
    MetricDef(
        "raymlops_rate_limited_total",
        "counter",
        "Requests refused with 429 by the per-client rate limit, by API key id ('anonymous' with auth off).",
        ("key",),
    ),
)


def _ray_factory(definition: MetricDef) -> Any:
    from ray.util import metrics

    if definition.kind == "counter":
        return metrics.Counter(definition.name, definition.description, definition.tag_keys)
    if definition.kind == "gauge":
        return metrics.Gauge(definition.name, definition.description, definition.tag_keys)
    return metrics.Histogram(
        definition.name, definition.description, list(definition.boundaries), definition.tag_keys
    )


class ServingMetrics:
    """The ``METRICS`` series of one replica; create once per replica (Ray registers each on creation).

    Args:
        factory: Builds the metric object for a ``MetricDef``; ``ray.util.metrics`` by default.
            Tests pass a recorder.
    """

    def __init__(self, factory: Callable[[MetricDef], Any] | None = None) -> None:
        make = factory or _ray_factory
        self._by_name = {d.name: make(d) for d in METRICS}
        self._requests = self._by_name["raymlops_requests_total"]
        self._errors = self._by_name["raymlops_request_errors_total"]
        self._latency = self._by_name["raymlops_request_latency_seconds"]
        self._probability = self._by_name["raymlops_prediction_probability"]
        self._classes = self._by_name["raymlops_predicted_class_total"]
        self._weight = self._by_name["raymlops_routing_weight"]
        self._agreement = self._by_name["raymlops_shadow_agreement"]
        self._dropped = self._by_name["raymlops_shadow_dropped_total"]
        self._ood = self._by_name["raymlops_ood_rows_total"]
        self._limited = self._by_name["raymlops_rate_limited_total"]
        self._weighted: set[tuple[str, str]] = set()
        self._weights: dict[tuple[str, str], float] = {}
        # Tag dicts are built once per label combination, not per request.
        self._tags: dict[tuple[str, ...], dict[str, str]] = {}

    def _tag(self, model: str, version: str, route: str | None = None) -> dict[str, str]:
        key = (model, version) if route is None else (model, version, route)
        tags = self._tags.get(key)
        if tags is None:
            tags = {"model": model, "version": version}
            if route is not None:
                tags["route"] = route
            self._tags[key] = tags
        return tags

    def request(
        self,
        model: str,
        version: str,
        route: str,
        latency_s: float,
        *,
        code: int = 200,
        probabilities: np.ndarray | None = None,
        task: Task | None = None,
    ) -> None:
        """One scored request: counted, timed, and on error counted by status code. ``probabilities``:
        the served prediction (the task's shape); a binary one's probabilities enter the probability
        histogram, a multiclass one's answered classes the class counter, a regression value neither
        (its distribution is the monitor's; ``task`` None: judged by the shape, [N] as probabilities)."""
        tags = self._tag(model, version, route)
        self._requests.inc(1, tags)
        self._latency.observe(latency_s, tags)
        if code >= 400:
            self._errors.inc(1, {**tags, "code": str(code)})
        elif probabilities is not None and route == "served" and probabilities.size:
            kind = task.prediction_kind() if task is not None else None
            rows = len(probabilities)
            step = max(1, math.ceil(rows / MAX_OBSERVED_ROWS))
            version_tags = self._tag(model, version)
            if probabilities.ndim == 2 or kind == "classes":
                chosen = np.asarray(probabilities).reshape(rows, -1)[::step].argmax(axis=1)
                indices, counts = np.unique(chosen, return_counts=True)
                for index, count in zip(indices.tolist(), counts.tolist(), strict=True):
                    self._classes.inc(count, {**version_tags, "class_index": str(index)})
            elif kind in (None, "probability"):
                for value in probabilities[::step].tolist():
                    self._probability.observe(value, version_tags)

    def shadow_agreement(self, model: str, version: str, label_agreement: float) -> None:
        self._agreement.observe(label_agreement, self._tag(model, version))

    def shadow_dropped(self, model: str, version: str) -> None:
        self._dropped.inc(1, self._tag(model, version))

    def ood_rows(self, model: str, version: str, flags: list[list[str]]) -> None:
        """Count the rows flagged out of distribution (``ood.OODCheck.flags``), per column."""
        counts: dict[str, int] = {}
        for columns in flags:
            for column in columns:
                counts[column] = counts.get(column, 0) + 1
        for column, count in counts.items():
            self._ood.inc(count, {**self._tag(model, version), "column": column})

    def rate_limited(self, key: str) -> None:
        self._limited.inc(1, {"key": key})

    def routing_weights(self, weights: Mapping[tuple[str, str], float]) -> None:
        """Set the weight gauge of every (model, version) served; versions gone from the table get 0."""
        for model, version in self._weighted - set(weights):
            self._weight.set(0.0, self._tag(model, version))
        self._weights = {key: float(weight) for key, weight in weights.items()}
        self.refresh_gauges()
        self._weighted = set(weights)

    def refresh_gauges(self) -> None:
        """Set the gauges again. Ray 2.60's metrics agent drops a gauge not set within two report
        intervals, so the weights vanished from Prometheus ~20 s after a deploy; the router calls this
        from a timer thread."""
        for (model, version), weight in dict(self._weights).items():
            self._weight.set(weight, self._tag(model, version))

    def start_gauge_refresh(self) -> None:
        """A daemon thread re-setting the gauges every half report interval (see ``refresh_gauges``)."""
        try:
            import ray

            interval_s = max(0.5, ray._config.metrics_report_interval_ms() / 2000)
        except Exception:  # a private API: fall back to Ray's default 10 s interval
            interval_s = 5.0

        def refresh() -> None:
            while True:
                time.sleep(interval_s)
                self.refresh_gauges()

        threading.Thread(target=refresh, name="raymlops-gauges", daemon=True).start()


class RollingStats:
    """The last ``window`` requests of one (model, version, route), plus totals since it was created.

    ``record`` is called from the event loop (served) or a shadow worker thread; a lock keeps the
    totals and the window consistent for ``snapshot``.
    """

    def __init__(self, window: int, *, shadow: bool = False) -> None:
        self._lock = threading.Lock()
        # latency_s, code, the request's mean prediction ([N] outputs), its prediction summary or None
        self._events: deque[tuple[float, int, float, _Summary | None]] = deque(maxlen=window)
        self._agreements: deque[tuple[float, float]] | None = deque(maxlen=window) if shadow else None
        self.requests_total = 0
        self.errors_total = 0
        self.since = time.time()

    def record(self, latency_s: float, code: int, prediction: float | np.ndarray = math.nan) -> None:
        """One request: its latency, status and prediction: the predictions themselves (the task's
        shape: [N] probabilities or values, [N, K] class probabilities), or a mean probability."""
        summary = None
        if isinstance(prediction, np.ndarray):
            summary = _summary(prediction)
            prediction = summary[1] / summary[0] if summary[0] and summary[3] is None else math.nan
        with self._lock:
            self._events.append((latency_s, code, float(prediction), summary))
            self.requests_total += 1
            if code >= 400:
                self.errors_total += 1

    def record_agreement(self, label_agreement: float, mean_abs_diff: float) -> None:
        if self._agreements is None:
            raise ValueError("agreement is only recorded for the shadow route")
        with self._lock:
            self._agreements.append((label_agreement, mean_abs_diff))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            events = list(self._events)
            agreements = None if self._agreements is None else list(self._agreements)
            totals = (self.requests_total, self.errors_total)
        latency_ms = np.asarray([e[0] for e in events], dtype=np.float64) * 1000.0
        codes = [e[1] for e in events]
        probabilities = np.asarray([e[2] for e in events if e[1] < 400], dtype=np.float64)
        summaries = [e[3] for e in events if e[1] < 400 and e[3] is not None]
        errors_by_code: dict[str, int] = {}
        for code in codes:
            if code >= 400:
                errors_by_code[str(code)] = errors_by_code.get(str(code), 0) + 1
        errors = sum(errors_by_code.values())
        out: dict[str, Any] = {
            "requests_total": totals[0],
            "errors_total": totals[1],
            "since": self.since,
            "window": {
                "requests": len(events),
                "errors": errors,
                "error_rate": errors / len(events) if events else None,
                "errors_by_code": errors_by_code,
                "latency_ms": {
                    "p50": _quantile(latency_ms, 50),
                    "p99": _quantile(latency_ms, 99),
                },
                "mean_probability": _mean(probabilities[~np.isnan(probabilities)]),
                "prediction": _window_prediction(summaries),
            },
        }
        if agreements is not None:
            out["agreement"] = {
                "compared": len(agreements),
                "label_agreement": _mean(np.asarray([a[0] for a in agreements], dtype=np.float64)),
                "mean_abs_diff": _mean(np.asarray([a[1] for a in agreements], dtype=np.float64)),
            }
        return out


# (rows, sum, sum of squares, class counts): one request's predictions, what rollout compares.
_Summary = tuple[int, float, float, "np.ndarray | None"]


def _summary(pred: np.ndarray) -> _Summary:
    """[N] numbers: their count, sum and sum of squares; [N, K] classes: the answered classes' counts."""
    values = np.asarray(pred, dtype=np.float64)
    if values.ndim == 2:
        counts = np.bincount(values.argmax(axis=1), minlength=values.shape[1]) if len(values) else None
        return len(values), 0.0, 0.0, counts
    values = values.reshape(-1)
    return values.size, float(values.sum()), float(np.square(values).sum()), None


def _window_prediction(summaries: list[_Summary]) -> dict[str, Any]:
    """The window's predictions over rows: ``mean`` and ``std`` of [N] outputs (probabilities, values),
    ``class_shares`` of the answered classes of [N, K] ones (None where the window has none)."""
    rows = sum(s[0] for s in summaries)
    numbers = [s for s in summaries if s[3] is None]
    classes = [s[3] for s in summaries if s[3] is not None]
    out: dict[str, Any] = {"rows": rows, "mean": None, "std": None, "class_shares": None}
    n = sum(s[0] for s in numbers)
    if n:
        mean = sum(s[1] for s in numbers) / n
        out["mean"] = mean
        out["std"] = math.sqrt(max(sum(s[2] for s in numbers) / n - mean * mean, 0.0))
    width = max((len(c) for c in classes), default=0)
    if width:
        counts = sum(np.pad(c, (0, width - len(c))) for c in classes)
        out["class_shares"] = [float(v) for v in np.asarray(counts) / max(int(np.sum(counts)), 1)]
    return out


def _quantile(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


class StatsBook:
    """``RollingStats`` per (model, version, route) of one replica."""

    def __init__(self, window: int) -> None:
        self.window = window
        self._stats: dict[tuple[str, str, str], RollingStats] = {}
        self._lock = threading.Lock()

    def get(self, model: str, version: str, route: str) -> RollingStats:
        key = (model, version, route)
        stats = self._stats.get(key)
        if stats is None:
            with self._lock:
                stats = self._stats.setdefault(key, RollingStats(self.window, shadow=route == "shadow"))
        return stats

    def retain(self, live: Iterable[tuple[str, str]], window: int) -> None:
        """Forget versions no longer served; a new window size starts every window afresh."""
        live = set(live)
        with self._lock:
            if window != self.window:
                self._stats.clear()
                self.window = window
            for key in [k for k in self._stats if (k[0], k[1]) not in live]:
                del self._stats[key]

    def has(self, model: str, version: str, route: str) -> bool:
        return (model, version, route) in self._stats
