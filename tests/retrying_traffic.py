"""Client traffic that retries, for the fault tests: threads sending single-row predictions to a router
through ``raymlops.serving.retry.post_with_retry`` and keeping what each request finally got.

``tests/integration/test_faults.py`` (a replica and the controller killed) sends back to back;
``tests/e2e/node_faults.py`` (a worker node killed) paces its clients so training keeps the cores.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["RetryingTraffic"]


class RetryingTraffic:
    """``clients`` threads, each sending one row of ``rows`` per request to ``url`` (a predict route),
    every ``period_s`` (0: back to back), with up to ``attempts`` tries per request."""

    def __init__(
        self, url: str, rows: list[dict[str, Any]], clients: int, period_s: float = 0.0, attempts: int = 8
    ) -> None:
        self.url, self.rows, self.period_s, self.attempts = url, rows, period_s, attempts
        self.answered: list[str] = []  # prediction ids whose answer reached a client
        self.failed: list[int] = []  # status after every retry (-1: transport error)
        self.retried = 0  # attempts that failed and were tried again
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)
        ]

    def _client(self, index: int) -> None:
        import httpx

        from raymlops.serving.retry import RETRY_STATUSES, post_with_retry

        with httpx.Client(timeout=30.0) as client:
            original = client.post

            def counted(url: str, **kwargs: Any) -> httpx.Response:
                try:
                    response = original(url, **kwargs)
                except httpx.TransportError:
                    with self._lock:
                        self.retried += 1
                    raise
                if response.status_code in RETRY_STATUSES:
                    with self._lock:
                        self.retried += 1
                return response

            client.post = counted  # type: ignore[method-assign,assignment]
            n = 0
            while not self._stop.wait(self.period_s):
                row = self.rows[(index + n) % len(self.rows)]
                n += 1
                try:
                    response = post_with_retry(
                        client, self.url, json={"records": [row]}, attempts=self.attempts
                    )
                except httpx.TransportError:
                    with self._lock:
                        self.failed.append(-1)
                    continue
                with self._lock:
                    if response.status_code == 200:
                        self.answered.append(response.json()["prediction_id"])
                    else:
                        self.failed.append(response.status_code)

    def __enter__(self) -> RetryingTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def count(self) -> int:
        with self._lock:
            return len(self.answered)
