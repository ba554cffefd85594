"""When a failed delivery is tried again: growing delays spread over about three days.

The schedule is data so that it can be read, tested and swapped (tests use one of milliseconds).
After the last delay has passed and the attempt after it failed, the delivery has failed for good
and its endpoint is disabled: a receiver that has not answered 2xx for days is gone or broken, and
the partner is told (`webhook_endpoint.disabled`) rather than left with a silently growing queue.
"""
from __future__ import annotations

from datetime import timedelta

# Delay before retry N (1-based), after the first attempt failed: ~3 days and 10 attempts in all.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=14),
    timedelta(hours=20),
    timedelta(hours=24),
)


def delay_after(failed_attempts: int, schedule: tuple[timedelta, ...] = RETRY_SCHEDULE) -> timedelta | None:
    """The wait before the next attempt after `failed_attempts` failures, or None when out of retries."""
    if failed_attempts < 1:
        raise ValueError("there is no delay before the first attempt")
    if failed_attempts > len(schedule):
        return None
    return schedule[failed_attempts - 1]
