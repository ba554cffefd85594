"""Rate limiting of public endpoints (checkout, inbound webhooks): a token bucket per key, in-process.

Each key (a client IP, a checkout link, a webhook source) gets `burst` tokens that refill at `rate`
per second; a request spends one, or is refused with 429 and `Retry-After`. The buckets live in the
process, so N replicas allow N times the rate: this is a guard against floods and brute force, not
a quota. Idle buckets are dropped so the table cannot grow without bound.

    limiter = RateLimiter(rate=5, burst=20)

    @router.post("/v1/checkout/{link}/pay", dependencies=[rate_limited(limiter, by_client_ip)])
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request

from payloop.problems import Problem


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate, self.burst, self.clock, self.max_keys = rate, burst, clock, max_keys
        self._buckets: dict[str, _Bucket] = {}

    def try_acquire(self, key: str) -> float:
        """Spend a token of `key`: 0.0 when allowed, else the seconds until one is available."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._drop_full_buckets(now)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _drop_full_buckets(self, now: float) -> None:
        # A bucket that has refilled completely is the same as no bucket.
        full_after = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after}


def by_client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def rate_limited(limiter: RateLimiter | Callable[[Request], RateLimiter],
                 key: Callable[[Request], str] = by_client_ip):
    """Dependency refusing a request with 429 problem+json when its key's bucket is empty.

    `limiter` may be a function of the request, for a limiter sized from settings and kept per app."""
    def _check(request: Request) -> None:
        bucket = limiter if isinstance(limiter, RateLimiter) else limiter(request)
        wait = bucket.try_acquire(f"{request.url.path}|{key(request)}")
        if wait > 0:
            raise Problem(429, "Too Many Requests", "rate limit exceeded; retry later",
                          headers={"Retry-After": str(max(1, math.ceil(wait)))})

    return Depends(_check)
