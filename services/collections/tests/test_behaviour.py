"""Payment behaviour from paid invoices: averages, on-time ratio and drift."""
from datetime import date, timedelta

from payloop_collections.behaviour import PaidInvoice, compute


def paid(issued: date, days: int, terms: int = 30) -> PaidInvoice:
    return PaidInvoice(issued, issued + timedelta(days=terms), issued + timedelta(days=days))


def test_days_to_pay_rising_from_18_to_34_is_drift():
    history = [paid(date(2025, 6, 1) + timedelta(days=30 * k), 18) for k in range(6)]
    history += [paid(date(2025, 12, 1) + timedelta(days=30 * k), 34) for k in range(3)]
    result = compute(history)
    assert result.baseline_days_to_pay == 18.0 and result.recent_days_to_pay == 34.0
    assert result.drifting
    assert result.on_time_ratio == round(6 / 9, 3)  # 34 days on Net 30 terms is late
    assert result.average_days_to_pay == round((6 * 18 + 3 * 34) / 9, 1)


def test_steady_payers_and_thin_histories_do_not_drift():
    steady = [paid(date(2025, 6, 1) + timedelta(days=30 * k), 20 + k % 2) for k in range(9)]
    assert not compute(steady).drifting
    assert not compute([paid(date(2026, 1, 1), 10), paid(date(2026, 2, 1), 40)]).drifting
    assert compute([]) is None
