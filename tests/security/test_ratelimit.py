"""payloop.ratelimit: a token bucket per key, refusing floods with 429 problem+json and Retry-After."""
import httpx
import pytest
from fastapi import FastAPI

from payloop.problems import install_problem_handlers
from payloop.ratelimit import RateLimiter, rate_limited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate_per_key():
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.try_acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_acquire("a") == pytest.approx(0.5)
    assert limiter.try_acquire("b") == 0.0  # another key has its own bucket
    clock.now += 0.5
    assert limiter.try_acquire("a") == 0.0
    assert limiter.try_acquire("a") > 0
    clock.now += 100
    assert [limiter.try_acquire("a") for _ in range(4)][-1] > 0  # refills only up to the burst


def test_idle_buckets_are_dropped_when_the_table_is_full():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, max_keys=2)
    limiter.try_acquire("a")
    limiter.try_acquire("b")
    clock.now += 5
    limiter.try_acquire("c")
    assert set(limiter._buckets) == {"c"}


async def test_public_route_answers_429_with_retry_after():
    app = FastAPI()
    install_problem_handlers(app)
    limiter = RateLimiter(rate=0.1, burst=2, clock=Clock())

    @app.post("/v1/public/ping", dependencies=[rate_limited(limiter)])
    async def ping() -> dict:
        return {"ok": True}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        statuses = [(await client.post("/v1/public/ping")).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        refused = await client.post("/v1/public/ping")
        assert refused.headers["retry-after"] == "10"
        assert refused.headers["content-type"].startswith("application/problem+json")
