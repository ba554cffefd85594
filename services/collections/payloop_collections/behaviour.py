"""Client payment behaviour from paid invoices: days-to-pay, on-time ratio and drift.

Drift compares the recent window (invoices paid in the last `window_days` before the newest payment)
with the invoices paid before it: "from 18 to 34 days over the last quarter".

The service computes a behaviour `from_totals`, which the database sums (`repository.paid_totals`).
`totals` and `compute` say the same over a list of paid invoices in plain Python: they are the
definition the tests hold the SQL and the drift rules to, and no code path of the service calls them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

WINDOW_DAYS = 90
MIN_SAMPLES = 2
# A client drifts when recent days-to-pay exceed the baseline by this many days and this ratio.
DRIFT_MIN_DAYS = 7
DRIFT_MIN_RATIO = 1.25


@dataclass(frozen=True)
class PaidInvoice:
    issued_on: date
    due_on: date
    paid_on: date

    @property
    def days_to_pay(self) -> int:
        return (self.paid_on - self.issued_on).days

    @property
    def on_time(self) -> bool:
        return self.paid_on <= self.due_on


@dataclass(frozen=True)
class Behaviour:
    samples: int
    average_days_to_pay: float
    recent_days_to_pay: float | None
    baseline_days_to_pay: float | None
    on_time_ratio: float
    drifting: bool
    window_days: int = WINDOW_DAYS


@dataclass(frozen=True)
class PaidTotals:
    """What a behaviour is computed from: counts and day sums of a client's paid invoices, split at
    `window_days` before its newest payment (the database sums them: a client's history only grows)."""
    samples: int
    days: int
    on_time: int
    recent: int
    recent_days: int

    @property
    def baseline(self) -> int:
        return self.samples - self.recent

    @property
    def baseline_days(self) -> int:
        return self.days - self.recent_days


def totals(paid: list[PaidInvoice], *, window_days: int = WINDOW_DAYS) -> PaidTotals | None:
    if not paid:
        return None
    cutoff = max(p.paid_on for p in paid) - timedelta(days=window_days)
    recent = [p.days_to_pay for p in paid if p.paid_on > cutoff]
    return PaidTotals(samples=len(paid), days=sum(p.days_to_pay for p in paid),
                      on_time=sum(p.on_time for p in paid), recent=len(recent), recent_days=sum(recent))


def _mean(total: int, count: int) -> float:
    return round(total / count, 1)


def compute(paid: list[PaidInvoice], *, window_days: int = WINDOW_DAYS) -> Behaviour | None:
    return from_totals(totals(paid, window_days=window_days), window_days=window_days)


def from_totals(t: PaidTotals | None, *, window_days: int = WINDOW_DAYS) -> Behaviour | None:
    if t is None or not t.samples:
        return None
    recent_avg = _mean(t.recent_days, t.recent) if t.recent >= MIN_SAMPLES else None
    baseline_avg = _mean(t.baseline_days, t.baseline) if t.baseline >= MIN_SAMPLES else None
    drifting = (recent_avg is not None and baseline_avg is not None
                and recent_avg - baseline_avg >= DRIFT_MIN_DAYS
                and recent_avg >= baseline_avg * DRIFT_MIN_RATIO)
    return Behaviour(
        samples=t.samples,
        average_days_to_pay=_mean(t.days, t.samples),
        recent_days_to_pay=recent_avg,
        baseline_days_to_pay=baseline_avg,
        on_time_ratio=round(t.on_time / t.samples, 3),
        drifting=drifting,
        window_days=window_days,
    )
