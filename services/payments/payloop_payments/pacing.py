"""Our own pace of requests to Stripe, kept under its rate limit so Stripe never has to refuse us.

A token bucket that lends: each request takes a slot (the next free one when the bucket is empty) and
waits until that slot's time, so concurrent callers queue in the order they asked, and in any window
of `t` seconds at most `burst + rate * t` requests start. The clock and the sleep are parameters, so
the arithmetic is tested without waiting.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class RequestPace:
    def __init__(self, rate: float, *, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        if rate <= 0:
            raise ValueError("rate must be positive")
        # A tenth of a second's worth: even a limiter that counts whole seconds sees at most
        # `rate * 1.1` requests in any one, which our default (90 of Stripe's 100) keeps under.
        self.rate, self.burst = rate, burst if burst is not None else max(1.0, rate / 10)
        self._clock, self._sleep = clock, sleep
        self._tokens, self._stamp = self.burst, clock()

    def reserve(self) -> float:
        """Take the next slot; returns how many seconds to wait before using it."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= 1  # below zero: a slot lent from the future, which the wait pays back
        return max(0.0, -self._tokens / self.rate)

    async def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)
