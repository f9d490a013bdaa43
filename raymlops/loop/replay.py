"""Replay recorded flights as live traffic: real HTTP predictions, then each true outcome as feedback.

A month's sampled flights go out in time order (a few client threads take consecutive requests), each
answer's ``prediction-id`` comes back as ``POST /v1/feedback`` with the outcome the flight really had, so
the router's prediction log and feedback log fill exactly as they would in production and the monitor
measures live accuracy from them. :meth:`Replayer.background` keeps a steady, throttled stream going
(cycling a month's requests) while a retrain and its progressive rollout run: a rollout judges the
candidate on live traffic, so it needs some (a trickle while the candidate trains, more during the rollout).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Replayer", "TrafficStats"]

FEEDBACK_BATCH = 25  # outcomes sent per POST /v1/feedback


@dataclass
class TrafficStats:
    """What the clients saw: requests, errors, and per served version the rows and correct answers."""

    started: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    ended: dt.datetime | None = None
    requests: int = 0
    errors: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # version -> rows answered
    correct: dict[str, int] = field(default_factory=dict)  # version -> answers equal to the outcome
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, version: str, labels: Sequence[int], outcomes: Sequence[float]) -> None:
        with self._lock:
            self.requests += 1
            self.rows[version] = self.rows.get(version, 0) + len(labels)
            hits = sum(int(label == outcome) for label, outcome in zip(labels, outcomes, strict=True))
            self.correct[version] = self.correct.get(version, 0) + hits

    def error(self) -> None:
        with self._lock:
            self.requests += 1
            self.errors += 1

    def accuracy(self) -> dict[str, float]:
        return {v: self.correct[v] / n for v, n in self.rows.items() if n}

    def served_by(self) -> str:
        """``v1 800 rows, v2 200 rows``: who answered how much."""
        return ", ".join(f"v{v} {n} rows" for v, n in sorted(self.rows.items())) or "nobody"


class Replayer:
    """Send a table's rows to ``{url}/v1/models/{model}/predict`` and their outcomes to ``/v1/feedback``."""

    def __init__(
        self,
        url: str,
        model: str,
        input_columns: Sequence[str],
        outcome: tuple[str, float],  # (label source column, threshold): outcome = column > threshold
        *,
        rows_per_request: int = 1,
        concurrency: int = 4,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url, self.model = url.rstrip("/"), model
        self.input_columns = list(input_columns)
        self.outcome_column, self.threshold = outcome
        self.rows_per_request = max(1, rows_per_request)
        self.concurrency = max(1, concurrency)
        self.headers = dict(headers or {})
        # One INFO line per request would bury the job's own log under thousands of replayed requests.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    def requests(self, table: pa.Table) -> list[tuple[list[dict[str, Any]], list[float]]]:
        """The table as (records, outcomes) per request, in row order."""
        outcomes = pc.greater(table[self.outcome_column], self.threshold).to_numpy(zero_copy_only=False)
        records = table.select(self.input_columns).to_pylist()
        out = []
        for start in range(0, table.num_rows, self.rows_per_request):
            stop = start + self.rows_per_request
            out.append(
                (records[start:stop], [float(y) for y in np.asarray(outcomes[start:stop], dtype=float)])
            )
        return out

    def _send(
        self, client: Any, request: tuple[list[dict[str, Any]], list[float]], stats: TrafficStats
    ) -> list:
        records, outcomes = request
        try:
            response = client.post(f"{self.url}/v1/models/{self.model}/predict", json={"records": records})
        except Exception:  # a refused connection while Serve reconfigures is an error the client saw
            stats.error()
            return []
        if response.status_code != 200:
            stats.error()
            return []
        labels = [int(p["label"]) for p in response.json()["predictions"]]
        stats.add(response.headers.get("model-version", "?"), labels, outcomes)
        pid = response.headers["prediction-id"]
        return [{"prediction_id": pid, "row": i, "outcome": y} for i, y in enumerate(outcomes)]

    def _feedback(self, client: Any, items: list[dict[str, Any]]) -> None:
        if items:
            client.post(f"{self.url}/v1/feedback", json={"feedback": items}).raise_for_status()

    def replay(self, table: pa.Table) -> TrafficStats:
        """Send every row of ``table`` (in order, ``concurrency`` clients) with its outcome as feedback."""
        import httpx

        stats = TrafficStats()
        queue = iter(self.requests(table))
        lock = threading.Lock()
        failures: list[BaseException] = []

        def client_loop() -> None:
            pending: list[dict[str, Any]] = []
            with httpx.Client(timeout=30.0, headers=self.headers) as client:
                while True:
                    with lock:
                        request = next(queue, None)
                    if request is None:
                        break
                    pending += self._send(client, request, stats)
                    if len(pending) >= FEEDBACK_BATCH:
                        self._feedback(client, pending)
                        pending = []
                self._feedback(client, pending)

        def guarded() -> None:
            try:
                client_loop()
            except BaseException as exc:  # re-raised in the caller's thread
                failures.append(exc)

        threads = [threading.Thread(target=guarded, daemon=True) for _ in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats.ended = dt.datetime.now(dt.UTC)
        if failures:
            raise failures[0]
        return stats

    @contextlib.contextmanager
    def background(
        self,
        table: pa.Table,
        rate_per_s: float = 2.0,
        *,
        busy_rate_per_s: float = 25.0,
        busy: Callable[[], bool] | None = None,
    ) -> Iterator[TrafficStats]:
        """Keep sending ``table``'s requests (cycling, with feedback) until exit: about ``rate_per_s``, and
        ``busy_rate_per_s`` while ``busy()`` says so (checked every second; e.g. while a rollout needs
        evidence). A slow trickle otherwise leaves the CPUs to the training it runs beside."""
        import httpx

        stats = TrafficStats()
        stop = threading.Event()
        requests = self.requests(table)
        state = {"busy": False, "checked": 0.0}

        def rate() -> float:
            now = time.monotonic()
            if busy is not None and now - state["checked"] >= 1.0:
                state["checked"] = now
                with contextlib.suppress(Exception):  # a failed probe keeps the last answer
                    state["busy"] = bool(busy())
            return busy_rate_per_s if state["busy"] else rate_per_s

        def run() -> None:
            pending: list[dict[str, Any]] = []
            with httpx.Client(timeout=30.0, headers=self.headers) as client:
                for request in itertools.cycle(requests):
                    if stop.is_set():
                        break
                    began = time.monotonic()
                    pending += self._send(client, request, stats)
                    if len(pending) >= FEEDBACK_BATCH:
                        with contextlib.suppress(Exception):  # a reconfigure may refuse one batch
                            self._feedback(client, pending)
                        pending = []
                    stop.wait(max(0.0, 1.0 / rate() - (time.monotonic() - began)))

        worker = threading.Thread(target=run, daemon=True, name="loop-background-traffic")
        worker.start()
        try:
            yield stats
        finally:
            stop.set()
            worker.join(60)
            stats.ended = dt.datetime.now(dt.UTC)
