"""The serving rate limit: token-bucket maths on an injected clock, the LRU bound, the ASGI answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from raymlops.errors import ConfigError
from raymlops.serving.rate_limit import RateLimiter, RateLimitMiddleware, RateLimitSettings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_the_rate_with_retry_after_from_the_bucket() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimitSettings(requests_per_s=2.0, burst=3), clock=clock)
    assert [limiter.check("a")[0] for _ in range(3)] == [0, 0, 0]  # the burst
    assert limiter.check("a") == (1, True)  # empty: one token in 0.5 s, rounded up to 1 s
    assert limiter.check("a") == (1, False)  # the same run of refusals: not "first" again
    clock.now += 0.5
    assert limiter.check("a") == (0, False)  # one token refilled
    assert limiter.check("a")[0] == 1
    clock.now += 10.0  # refills to the burst, never beyond it
    assert [limiter.check("a")[0] for _ in range(4)] == [0, 0, 0, 1]
    assert limiter.check("b")[0] == 0  # another client has its own bucket


def test_retry_after_is_whole_seconds_until_a_token() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimitSettings(requests_per_s=0.1, burst=1), clock=clock)
    assert limiter.check("a")[0] == 0
    assert limiter.check("a")[0] == 10  # 1 token at 0.1/s
    clock.now += 2.5
    assert limiter.check("a")[0] == 8  # 7.5 s left -> 8
    clock.now += 7.5
    assert limiter.check("a")[0] == 0
    clock.now -= 50  # a clock stepping back neither refills nor drains
    assert limiter.check("a")[0] == 10


def test_bucket_memory_is_bounded_and_evicts_the_least_recent() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimitSettings(requests_per_s=1.0, burst=1), max_clients=2, clock=clock)
    assert limiter.check("a")[0] == 0 and limiter.check("b")[0] == 0
    assert limiter.check("a")[0] == 1  # a is now the most recent
    assert limiter.check("c")[0] == 0  # evicts b
    assert len(limiter) == 2
    assert limiter.check("a")[0] == 1  # a kept its empty bucket
    assert limiter.check("b")[0] == 0  # b starts over from a full bucket
    for i in range(1000):
        limiter.check(f"flood-{i}")
    assert len(limiter) == 2


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"requests_per_s": -1}, "serve.rate_limit.requests_per_s"),
        ({"requests_per_s": float("inf")}, "serve.rate_limit.requests_per_s"),
        ({"requests_per_s": 5, "burst": 0}, "serve.rate_limit.burst"),
        ({"requests_per_s": 5, "burst": 2.5}, "serve.rate_limit.burst"),
        ({"rps": 5}, "serve.rate_limit.rps"),
        ([5], "serve.rate_limit"),
    ],
)
def test_bad_settings_name_the_key(data: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        RateLimitSettings.from_dict(data)
    assert info.value.key == key


def _call(middleware: RateLimitMiddleware, path: str, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """One request through the middleware; returns status, headers and body of its answer."""
    scope: dict[str, Any] = {"type": "http", "path": path, "client": ("10.0.0.7", 5555), "headers": []}
    if state is not None:
        scope["state"] = state
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    start, body = sent[0], sent[1]
    return {
        "status": start["status"],
        "headers": {k.decode(): v.decode() for k, v in start["headers"]},
        "body": json.loads(body["body"]) if body["body"] else None,
    }


async def _ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_middleware_answers_429_per_key_and_exempts_health() -> None:
    settings = RateLimitSettings(requests_per_s=0.5, burst=1)
    limited: list[tuple[str, str, int, bool]] = []
    middleware = RateLimitMiddleware(_ok_app, lambda: settings, lambda *args: limited.append(args))
    assert _call(middleware, "/v1/models/m/predict")["status"] == 200
    refused = _call(middleware, "/v1/models/m/predict")
    assert refused["status"] == 429
    assert refused["headers"]["retry-after"] == "2"  # 1 token at 0.5/s
    assert "retry in 2 s" in refused["body"]["error"] and "0.5 requests/s" in refused["body"]["error"]
    assert limited == [("anonymous", "addr:10.0.0.7", 2, True)]
    # Health probes are never limited; another API key from the same address has its own bucket.
    assert [_call(middleware, "/v2/health/ready")["status"] for _ in range(3)] == [200, 200, 200]
    assert _call(middleware, "/v1/models", {"api_key_id": "0123456789ab"})["status"] == 200
    assert _call(middleware, "/v1/models", {"api_key_id": "0123456789ab"})["status"] == 429
    assert limited[-1][:2] == ("0123456789ab", "key:0123456789ab")


def test_middleware_off_at_rate_zero_and_new_settings_start_over() -> None:
    current = [RateLimitSettings(requests_per_s=0.0, burst=1)]
    middleware = RateLimitMiddleware(_ok_app, lambda: current[0])
    assert {_call(middleware, "/v1/models")["status"] for _ in range(5)} == {200}
    current[0] = RateLimitSettings(requests_per_s=1.0, burst=2)
    assert [_call(middleware, "/v1/models")["status"] for _ in range(3)] == [200, 200, 429]
    current[0] = RateLimitSettings(requests_per_s=1.0, burst=3)  # a redeploy: fresh buckets
    assert [_call(middleware, "/v1/models")["status"] for _ in range(4)] == [200, 200, 200, 429]
