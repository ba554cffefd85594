"""Our pace of Stripe requests, on an injected clock: the arithmetic, not the wall clock."""
import random

import pytest

from payloop_payments.pacing import RequestPace


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_and_the_rest_waits_for_its_slot_in_order():
    clock = Clock()
    pace = RequestPace(10, burst=2, clock=clock)
    assert [pace.reserve() for _ in range(5)] == pytest.approx([0, 0, 0.1, 0.2, 0.3])
    clock.now = 0.3  # the slots lent up to 0.3 s are paid back; the next one is 0.4 s
    assert pace.reserve() == pytest.approx(0.1)
    clock.now = 10.0  # idle long enough: the bucket is full again, but holds no more than the burst
    assert [pace.reserve() for _ in range(3)] == pytest.approx([0, 0, 0.1])


def test_no_window_sees_more_than_the_burst_plus_the_rate():
    clock = Clock()
    rate = 90.0
    pace = RequestPace(rate, clock=clock)
    assert pace.burst == 9  # a tenth of a second's worth
    rng = random.Random(9)
    starts = []
    for _ in range(5_000):  # callers asking faster than the rate, in uneven clumps
        clock.now += rng.expovariate(300)
        starts.append(clock.now + pace.reserve())
    starts.sort()
    # Every second-long window, from each start: at most 9 + 90 = 99 requests, under Stripe's 100.
    end = 0
    for begin, at in enumerate(starts):
        while end < len(starts) and starts[end] < at + 1.0:
            end += 1
        assert end - begin <= pace.burst + rate
    # And the pace is used, not wasted: 5,000 requests take about 5,000 / 90 seconds.
    assert starts[-1] == pytest.approx((5_000 - pace.burst) / rate, rel=0.01)


async def test_wait_sleeps_for_the_reserved_slot():
    clock, slept = Clock(), []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    pace = RequestPace(4, burst=1, clock=clock, sleep=sleep)
    for _ in range(3):
        await pace.wait()
    assert slept == pytest.approx([0.25, 0.5])


def test_a_rate_must_be_positive():
    with pytest.raises(ValueError):
        RequestPace(0)
