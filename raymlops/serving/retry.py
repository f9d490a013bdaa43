"""Client-side retry for idempotent requests: what a client does to see no failure while a replica,
the Serve controller or a node dies (``docs/durability.md``).

A prediction is idempotent: sending it again scores the same rows again. A request that a dying
replica had taken gets a connection error or a 5xx from Serve's proxy; the next attempt goes to a live
replica. (A retried request that the dead replica had in fact scored may leave one more logged row
for the same input, under another prediction id: the log holds every answer a client received.)
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["RETRY_STATUSES", "post_with_retry"]

RETRY_STATUSES = frozenset({500, 502, 503, 504})  # what Serve's proxy answers while a replica is gone


def post_with_retry(
    client: Any,  # httpx.Client
    url: str,
    *,
    attempts: int = 5,
    backoff_s: float = 0.2,
    **kwargs: Any,
) -> Any:  # httpx.Response
    """``client.post(url, **kwargs)``, again after a transport error or a status in ``RETRY_STATUSES``,
    at most ``attempts`` times, waiting ``backoff_s`` x 2^n between tries; returns the last response
    (or raises the last transport error). Use it for idempotent requests only (predict, explain)."""
    import httpx

    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            response = client.post(url, **kwargs)
        except httpx.TransportError:
            if last:
                raise
        else:
            if response.status_code not in RETRY_STATUSES or last:
                return response
        time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")  # the loop returns or raises on its last attempt
