"""The router's scoring path, one for every protocol and every attempt (no FastAPI here).

Per request: choose the version (weighted, or sticky by a key; ``policy.choose_version``), build its
inputs (``request_inputs``), score it, answer. A version that fails at run time costs its clients
nothing: the version with the most traffic answers instead, by the same attempt, and the failure still
counts against the first (a rollout rolls it back on it). Then, off the request path, maybe hand the
same rows to the shadow version on a one-thread pool (bounded: beyond ``shadow_max_in_flight`` calls a
sampled shadow call is dropped and counted). Served and shadow answers go to the prediction log.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from raymlops.errors import OnlineStoreError, RequestError
from raymlops.monitoring.prediction_log import PredictionLogger
from raymlops.security.pii import masker_from_settings
from raymlops.serving.metrics import StatsBook
from raymlops.serving.policy import ShadowPool, choose_version, sample_shadow

if TYPE_CHECKING:
    from raymlops.serving.metrics import ServingMetrics
    from raymlops.serving.model_inputs import ModelInputs
    from raymlops.serving.protocols.base import ServingProtocol
    from raymlops.serving.request_inputs import RequestInputs
    from raymlops.serving.routing_table import Routes
    from raymlops.serving.spec import ModelSpec, PredictionLogSettings, RoutingConfig

__all__ = ["Answer", "Scorer"]

logger = logging.getLogger(__name__)


class Answer(NamedTuple):
    """A scoring answer: status, JSON body (``{"error": ...}`` for an error) and headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def _error(status: int, message: str, headers: dict[str, str]) -> Answer:
    return Answer(status, {"error": message}, headers)


def _fallback(specs: tuple[ModelSpec, ...], failed: ModelSpec) -> ModelSpec | None:
    """The version that answers when ``failed`` raised: the one with the most traffic, if not it."""
    others = [s for s in specs if s.version != failed.version and s.weight > 0]
    return max(others, key=lambda s: s.weight) if others else None


def version_headers(name: str, spec: ModelSpec) -> dict[str, str]:
    return {"model-name": name, "model-version": spec.version, "data-version": spec.data_version}


class Scorer:
    """Scores requests against the routing table it is handed; keeps the statistics, the shadow pool
    and the prediction log of its replica."""

    def __init__(self, metrics: ServingMetrics, inputs: RequestInputs, stats_window: int) -> None:
        self._metrics, self._inputs = metrics, inputs
        self._rng = random.Random()
        self.stats = StatsBook(stats_window)
        self.shadow = ShadowPool()
        self.shadow_dropped: dict[tuple[str, str], int] = {}
        self._warned: set[tuple[str, str, str]] = set()
        # Prediction log (None: off) and the settings it was opened with; see reconfigure_log.
        self.predictions: PredictionLogger | None = None
        self._log_settings: PredictionLogSettings | None = None

    def route(
        self,
        routes: Routes,
        name: str,
        protocol: ServingProtocol,
        body: bytes,
        headers: Mapping[str, str],
        failure: RequestError | None = None,
    ) -> tuple[ModelSpec, Any, bool, RequestError | None]:
        """Choose the version that answers: by the name's sticky key (a header, or a body field: the
        body is parsed here only then), else weighted. Returns ``(spec, payload, parsed, failure)``;
        a body that does not parse is a ``failure`` to answer as the chosen version's."""
        policy = routes.config.policies.get(name)
        sticky = policy.sticky if policy is not None else None
        payload: Any = None
        parsed = False
        key = None
        if sticky is not None and sticky.source == "header":
            key = headers.get(sticky.key)
        elif sticky is not None and failure is None:
            try:
                payload, parsed = protocol.parse(body, headers), True
                key = protocol.sticky_key(payload, sticky.key)
            except RequestError as exc:
                failure = exc
        return choose_version(routes.specs(name), self._rng, key=key, name=name), payload, parsed, failure

    async def score(
        self,
        routes: Routes,
        name: str,
        protocol: ServingProtocol,
        body: bytes,
        headers: Mapping[str, str],
        started: float,
        fixed: ModelSpec | None = None,
        failure: RequestError | None = None,
    ) -> Answer:
        """Score one request. ``fixed``: an explicit version (no routing, fallback nor shadow).
        ``failure``: an error found before the version is chosen (the body too large), answered as
        that version's so that it counts against it like any other failed request."""
        config = routes.config
        specs = routes.specs(name)
        policy = config.policies.get(name)
        if fixed is None:
            spec, payload, parsed, failure = self.route(routes, name, protocol, body, headers, failure)
        else:
            spec, payload, parsed = fixed, None, False
        failed: str | None = None  # the version a fallback answers for
        while True:
            answer_headers = version_headers(name, spec)
            if failed is not None:
                answer_headers["fallback-from"] = failed
            try:
                if failure is not None:
                    raise failure
                if not parsed:
                    payload, parsed = protocol.parse(body, headers), True
                inputs, imputed = await self._inputs.collect(
                    protocol, payload, spec, config.max_rows_per_request
                )
                ood = self._inputs.check_ood(routes, name, spec, inputs)
                probabilities = await routes.models[(name, spec.version)].apredict(inputs)
                break
            except RequestError as exc:
                self._record_served(name, spec.version, started, exc.status)
                return _error(exc.status, exc.message, answer_headers)
            except OnlineStoreError as exc:
                # Every version reads the same store: no fallback can answer. 503: retry later.
                self._record_served(name, spec.version, started, 503)
                self.warn_once(name, spec.version, exc, "online-store")
                message = f"model {name!r} version {spec.version!r} cannot fetch its features: {exc}"
                return _error(503, message, answer_headers)
            except Exception as exc:
                self._record_served(name, spec.version, started, 500)
                fallback = _fallback(specs, spec) if fixed is None and failed is None else None
                if fallback is None:
                    which = (
                        f"versions {failed!r}, {spec.version!r}" if failed else f"version {spec.version!r}"
                    )
                    logger.exception("model failed name=%s %s", name, which)
                    return _error(500, f"model {name!r} {which} failed: {exc}", answer_headers)
                self.warn_once(name, spec.version, exc)
                failed, spec, started = spec.version, fallback, time.perf_counter()
        prediction_id = uuid.uuid4().hex
        body_out = protocol.answer(name, spec, prediction_id, probabilities, payload, imputed, ood)
        self._record_served(name, spec.version, started, 200, probabilities, spec.task_obj)
        predictions = self.predictions
        if predictions is not None:  # a buffer push: the log's own thread writes the files
            latency_ms = (time.perf_counter() - started) * 1e3
            predictions.log(spec, "served", prediction_id, inputs.table(), probabilities, latency_ms)
        shadow = policy.shadow if policy is not None and fixed is None else None
        if shadow is not None and sample_shadow(shadow, spec.version, self._rng):
            self._start_shadow(
                routes, name, spec, shadow.version, protocol, payload, inputs, probabilities, prediction_id
            )
        answer_headers["prediction-id"] = prediction_id
        return Answer(200, body_out, answer_headers)

    def warn_once(self, name: str, version: str, exc: Exception, route: str = "served") -> None:
        """Log a model's run-time failure once per (version, route), not once per request."""
        if (name, version, route) not in self._warned:
            self._warned.add((name, version, route))
            logger.warning("%s model failed name=%s version=%s error=%r", route, name, version, exc)

    def _record_served(
        self,
        name: str,
        version: str,
        started: float,
        code: int,
        probabilities: np.ndarray | None = None,
        task: Any = None,
    ) -> None:
        latency_s = time.perf_counter() - started
        self._metrics.request(
            name, version, "served", latency_s, code=code, probabilities=probabilities, task=task
        )
        # The predictions themselves (the task's shape): summarised as rollout compares them.
        prediction = probabilities if probabilities is not None and probabilities.size else np.nan
        self.stats.get(name, version, "served").record(latency_s, code, prediction)

    def _start_shadow(
        self,
        routes: Routes,
        name: str,
        served: ModelSpec,
        version: str,
        protocol: ServingProtocol,
        payload: Any,
        served_inputs: ModelInputs,
        served_probabilities: np.ndarray,
        prediction_id: str,
    ) -> None:
        model = routes.models[(name, version)]
        max_rows = routes.config.max_rows_per_request

        def job() -> None:
            started = time.perf_counter()
            spec = model.spec
            code, probabilities, compared = 200, None, False
            label_agreement = mean_abs_diff = 0.0
            try:
                same_inputs = spec.input_columns == served.input_columns
                inputs = (
                    served_inputs
                    if same_inputs
                    else self._inputs.collect_now(protocol, payload, spec, max_rows)[0]
                )
                probabilities = model.predict_inputs(inputs)
                # The served version's task judges (binary: labels by each one's threshold; multiclass:
                # the same class; regression: values close); a shadow of another task is not compared.
                task = served.task_obj
                compared = task.comparable(spec.task_obj)
                if compared:
                    label_agreement, mean_abs_diff = task.agreement(
                        served_probabilities, probabilities, served.threshold, spec.threshold
                    )
            except RequestError as exc:
                code = exc.status
            except OnlineStoreError:
                code = 503
            except Exception as exc:
                code = 500
                self.warn_once(name, version, exc, "shadow")
            latency_s = time.perf_counter() - started
            self._metrics.request(name, version, "shadow", latency_s, code=code)
            stats = self.stats.get(name, version, "shadow")
            if probabilities is None or code != 200:
                stats.record(latency_s, code)
                return
            stats.record(latency_s, code, probabilities)
            if compared:
                stats.record_agreement(label_agreement, mean_abs_diff)
                self._metrics.shadow_agreement(name, version, label_agreement)
            predictions = self.predictions
            if predictions is not None:
                predictions.log(spec, "shadow", prediction_id, inputs.table(), probabilities, latency_s * 1e3)

        if not self.shadow.submit(routes.config.shadow_max_in_flight, job):
            key = (name, version)
            self.shadow_dropped[key] = self.shadow_dropped.get(key, 0) + 1
            self._metrics.shadow_dropped(name, version)

    def reconfigure(self, config: RoutingConfig, served: Iterable[tuple[str, str]]) -> None:
        """Keep the statistics of the versions still served, and the log as ``config`` says."""
        self.stats.retain(served, config.stats_window)
        self.reconfigure_log(config)

    def reconfigure_log(self, config: RoutingConfig) -> None:
        """Open, keep, or write out and close the prediction log as ``config.prediction_log`` says.

        A different root or flush setting closes the old writer (writing out what it holds) before
        the new one takes over; requests that raced the swap still land in the old one's files.
        """
        settings, current = config.prediction_log, self.predictions
        if settings == self._log_settings:
            if current is not None:
                current.retain(s for specs in config.models.values() for s in specs)
            return
        self.predictions = (
            None
            if settings is None
            else PredictionLogger(
                settings.root,
                flush_rows=settings.flush_rows,
                flush_interval_s=settings.flush_interval_s,
                pii=masker_from_settings(settings.pii),  # the key from the cluster's store, never a setting
                wal=settings.wal,
                fsync_interval_ms=settings.fsync_interval_ms,
                fsync_rows=settings.fsync_rows,
            )
        )
        self._log_settings = settings
        if current is not None:
            current.close()
        logger.info("prediction log settings=%s", settings.to_dict() if settings is not None else None)

    def close(self, timeout_s: float = 5.0) -> None:
        """Let running shadow calls log, then write the prediction log out."""
        predictions = self.predictions
        if predictions is None:
            return
        deadline = time.monotonic() + timeout_s
        while self.shadow.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        predictions.close()
