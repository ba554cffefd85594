"""Every metric on a known book of invoices equals the figure computed by hand in the comments.

The book, as of 2026-03-31 with a 90-day window (2026-01-01 .. 2026-03-31):

| invoice | client | total  | issued     | due        | what happened                                  | balance on D |
|---------|--------|--------|------------|------------|------------------------------------------------|--------------|
| I0      | A      |  8,000 | 2025-11-01 | 2025-11-30 | paid 2025-11-21 (20 days, on time)             | 0            |
| I1      | A      | 10,000 | 2025-12-01 | 2025-12-31 | paid 2026-01-10 (40 days, late)                | 0            |
| I2      | A      | 50,000 | 2026-01-15 | 2026-02-14 | 20,000 paid 2026-02-01 (partial)               | 30,000 (45d) |
| I3      | B      | 30,000 | 2026-03-01 | 2026-03-31 | nothing; due on D itself                       | 30,000 (cur) |
| I4      | B      | 20,000 | 2026-02-01 | 2026-03-01 | credit memo 5,000 on 2026-02-10                | 15,000 (30d) |
| I5      | C      | 40,000 | 2025-10-01 | 2025-10-31 | nothing                                        | 40,000 (151d)|
| I6      | C      | 10,000 | 2026-01-05 | 2026-01-20 | paid 2026-01-18, refunded 2026-02-05           | 10,000 (70d) |
| I7      | C      | 25,000 | 2026-02-10 | 2026-03-12 | voided 2026-02-20                              | 0            |
| I8      | A      | 12,000 | 2026-02-20 | 2026-03-01 | paid 2026-02-25 (5 days, on time)              | 0            |
"""
from datetime import date
from fractions import Fraction

from payloop_reporting import metrics as m
from payloop_reporting.metrics import AutopayChange, InvoiceFacts, Reduction

D = date(2026, 3, 31)


def book() -> list[InvoiceFacts]:
    d = date
    return [
        InvoiceFacts("I0", "A", 8_000, d(2025, 11, 1), d(2025, 11, 30), (Reduction(d(2025, 11, 21), 8_000),)),
        InvoiceFacts("I1", "A", 10_000, d(2025, 12, 1), d(2025, 12, 31), (Reduction(d(2026, 1, 10), 10_000),)),
        InvoiceFacts("I2", "A", 50_000, d(2026, 1, 15), d(2026, 2, 14), (Reduction(d(2026, 2, 1), 20_000),)),
        InvoiceFacts("I3", "B", 30_000, d(2026, 3, 1), d(2026, 3, 31)),
        InvoiceFacts("I4", "B", 20_000, d(2026, 2, 1), d(2026, 3, 1), (Reduction(d(2026, 2, 10), 5_000),)),
        InvoiceFacts("I5", "C", 40_000, d(2025, 10, 1), d(2025, 10, 31)),
        InvoiceFacts("I6", "C", 10_000, d(2026, 1, 5), d(2026, 1, 20),
                     (Reduction(d(2026, 1, 18), 10_000), Reduction(d(2026, 2, 5), -10_000))),
        InvoiceFacts("I7", "C", 25_000, d(2026, 2, 10), d(2026, 3, 12), voided_on=d(2026, 2, 20)),
        InvoiceFacts("I8", "A", 12_000, d(2026, 2, 20), d(2026, 3, 1), (Reduction(d(2026, 2, 25), 12_000),)),
    ]


AUTOPAY = [
    AutopayChange("A", date(2026, 1, 1), True),
    AutopayChange("B", date(2026, 2, 1), True),
    AutopayChange("B", date(2026, 3, 15), False),
    AutopayChange("C", date(2026, 4, 5), True),
]


def test_aging_buckets_on_the_as_of_date():
    assert m.aging(book(), D) == {"current": 30_000, "d1_30": 15_000, "d31_60": 30_000, "d61_90": 10_000,
                                  "d90_plus": 40_000}
    assert m.receivables(book(), D) == 125_000
    assert m.current_receivables(book(), D) == 30_000


def test_invoices_cross_bucket_boundaries_a_day_later():
    # I3 (due D) turns 1 day past due; I4 (30 days) turns 31; nothing else moves bucket.
    assert m.aging(book(), date(2026, 4, 1)) == {"current": 0, "d1_30": 30_000, "d31_60": 45_000,
                                                 "d61_90": 10_000, "d90_plus": 40_000}


def test_bucket_edges():
    assert [m.bucket_of(d) for d in (-5, 0, 1, 30, 31, 60, 61, 90, 91)] == [
        "current", "current", "d1_30", "d1_30", "d31_60", "d31_60", "d61_90", "d61_90", "d90_plus"]


def test_balance_history_follows_partial_payments_refunds_credits_and_voids():
    i2, i4, i6, i7 = (next(i for i in book() if i.invoice_id == n) for n in ("I2", "I4", "I6", "I7"))
    assert [i2.balance_on(d) for d in (date(2026, 1, 14), date(2026, 1, 15), date(2026, 2, 1))] == [0, 50_000, 30_000]
    assert i4.balance_on(date(2026, 2, 9)) == 20_000 and i4.balance_on(date(2026, 2, 10)) == 15_000
    assert [i6.balance_on(d) for d in (date(2026, 1, 17), date(2026, 1, 18), date(2026, 2, 5))] == [10_000, 0, 10_000]
    assert i6.paid_on() is None  # the refund reopened it
    assert i7.balance_on(date(2026, 2, 19)) == 25_000 and i7.balance_on(date(2026, 2, 20)) == 0


def test_credit_sales_exclude_voids_and_count_the_window():
    # Issued 2026-01-01..03-31: I2 50,000 + I3 30,000 + I4 20,000 + I6 10,000 + I8 12,000 (I7 void).
    assert m.credit_sales(book(), date(2025, 12, 31), D) == 122_000


def test_dso_standard_best_possible_and_countback():
    # 125,000 / 122,000 x 90
    assert m.dso(book(), D, 90) == Fraction(125_000 * 90, 122_000)
    # 30,000 / 122,000 x 90
    assert m.best_possible_dso(book(), D, 90) == Fraction(30_000 * 90, 122_000)
    # AR 125,000: March sales 30,000 (31 days) -> 95,000 left; February 32,000 (28) -> 63,000;
    # January 60,000 (31) -> 3,000; December 10,000 covers it: 31 x 3,000/10,000 = 9.3 -> 99.3 days.
    assert m.countback_dso(book(), D) == Fraction(993, 10)


def test_overdue_rate_by_count_and_amount():
    rate = m.overdue_rate(book(), D)
    assert rate.by_count == Fraction(4, 5)  # I2, I4, I5, I6 of 5 open (I3 is due today, not late)
    assert rate.by_amount == Fraction(95_000, 125_000)


def test_days_to_pay_on_time_ratio_and_drift():
    # Paid in the window: I1 (40 days, late) and I8 (5 days, on time); I6 was refunded.
    assert m.average_days_to_pay(book(), D, 90) == Fraction(45, 2)
    assert m.on_time_ratio(book(), D, 90) == Fraction(1, 2)
    drift = m.days_to_pay_drift(book(), D, 90)
    assert drift.previous == 20  # I0 alone, paid in the window before
    assert drift.change == Fraction(5, 2)


def test_autopay_adoption_as_of_the_date():
    # Active: A, B, C. On D: A enrolled, B left on 03-15, C enrols only on 04-05.
    assert m.autopay_adoption(book(), AUTOPAY, D, 90) == Fraction(1, 3)
    assert m.autopay_adoption(book(), AUTOPAY, date(2026, 4, 5), 90) == Fraction(2, 3)


def test_collection_effectiveness_index():
    # Beginning AR (2025-12-31): I1 10,000 + I5 40,000 = 50,000. (50,000 + 122,000 - 125,000) /
    # (50,000 + 122,000 - 30,000) x 100
    assert m.receivables(book(), date(2025, 12, 31)) == 50_000
    assert m.collection_effectiveness(book(), D, 90) == Fraction(47_000 * 100, 142_000)


def test_metrics_without_data_are_undefined_not_zero():
    assert m.dso([], D, 90) is None
    assert m.overdue_rate([], D).by_count is None
    assert m.on_time_ratio([], D, 90) is None
    assert m.autopay_adoption([], AUTOPAY, D, 90) is None


def test_period_ends_by_day_week_and_month():
    assert m.period_ends(date(2026, 1, 30), date(2026, 2, 2), "day") == [
        date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 2)]
    # Weeks end on Sunday; the last is clipped to the end.
    assert m.period_ends(date(2026, 3, 4), date(2026, 3, 17), "week") == [
        date(2026, 3, 8), date(2026, 3, 15), date(2026, 3, 17)]
    assert m.period_ends(date(2026, 1, 15), date(2026, 3, 10), "month") == [
        date(2026, 1, 31), date(2026, 2, 28), date(2026, 3, 10)]


def test_a_reversal_dated_before_its_payment_owes_no_more_than_the_invoice():
    # The processor settled on the 5th by its clock; the return reached us dated the 3rd by ours.
    d = date
    returned = InvoiceFacts("IR", "A", 49_900, d(2026, 3, 1), d(2026, 3, 1),
                            (Reduction(d(2026, 3, 5), 49_900), Reduction(d(2026, 3, 3), -49_900)))
    assert [returned.balance_on(d(2026, 3, day)) for day in (2, 3, 4, 5, 6)] == [49_900] * 5
