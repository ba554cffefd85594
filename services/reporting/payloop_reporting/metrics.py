"""Receivables metrics as pure functions of invoice facts, evaluated as of any date.

Everything here is arithmetic on `InvoiceFacts` (no I/O), so every figure can be checked by hand in
a unit test. Money stays integer minor units; ratios and day counts are exact `Fraction`s, rounded
only where they leave the service. Dates are calendar dates in the tenant's timezone: the caller
converts instants (a payment's settlement) to the tenant's date before building the facts.

Formulas (also in docs/reporting.md and the OpenAPI descriptions):
- balance(D) = total - sum(reductions dated <= D), never below 0 nor above the total; 0 before issue, after void or
  write-off. An invoice is open on D when balance(D) > 0.
- days past due on D = D - due date; buckets: current (<= 0), 1-30, 31-60, 61-90, over 90.
- AR(D) = sum of open balances on D; current AR(D) = the part not yet due.
- credit sales over a window of N days ending D = totals of invoices issued in (D-N, D], not void.
- DSO (standard) = AR(D) / credit sales x N.
- DSO (countback) = walk back month by month from D's month (its days up to D), subtracting each
  month's credit sales from AR(D); every month fully absorbed adds its days, the month where AR runs
  out adds days x remaining AR / that month's sales. Months before the first sale stop the walk.
- best possible DSO = current AR(D) / credit sales x N.
- overdue rate = past-due open invoices / open invoices (count), past-due AR / AR (amount).
- days to pay = paid date - issue date, for invoices fully paid in the window (void excluded);
  average = their mean; on-time ratio = share of them paid on or before the due date.
- days-to-pay drift = average over the window minus the average over the window before it.
- auto-pay adoption = enrolled clients / clients with an open balance or an invoice in the window.
- CEI = (AR(start) + credit sales - AR(D)) / (AR(start) + credit sales - current AR(D)) x 100,
  with start = D - N.
"""
from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction

BUCKETS: tuple[str, ...] = ("current", "d1_30", "d31_60", "d61_90", "d90_plus")


@dataclass(frozen=True)
class Reduction:
    """Something that lowered (positive) or raised again (negative, a refund) an invoice's balance."""

    on: date
    amount_minor: int


@dataclass(frozen=True)
class InvoiceFacts:
    invoice_id: str
    client_id: str
    total_minor: int
    issued_on: date
    due_on: date
    reductions: tuple[Reduction, ...] = ()
    voided_on: date | None = None
    written_off_on: date | None = None

    def exists_on(self, day: date) -> bool:
        return self.issued_on <= day and not (self.voided_on is not None and self.voided_on <= day)

    def balance_on(self, day: date) -> int:
        if not self.exists_on(day) or (self.written_off_on is not None and self.written_off_on <= day):
            return 0
        reduced = sum(r.amount_minor for r in self.reductions if r.on <= day)
        # Between 0 and the total: a reversal dated before the payment it reverses (the processor's
        # clock ahead of ours) must not make more owed than the invoice.
        return min(max(self.total_minor - reduced, 0), self.total_minor)

    def paid_on(self) -> date | None:
        """The date its reductions came to cover the total (None while unpaid, void or written off)."""
        if self.voided_on is not None or self.written_off_on is not None or self.total_minor <= 0:
            return None
        # The last time the cumulative reductions reached the total, if they still cover it (a refund
        # can reopen a paid invoice; paying it again dates the payment anew).
        reduced, paid_on = 0, None
        for day in sorted({r.on for r in self.reductions}):
            before = reduced
            reduced += sum(r.amount_minor for r in self.reductions if r.on == day)
            if before < self.total_minor <= reduced:
                paid_on = day
        return paid_on if reduced >= self.total_minor else None


def bucket_of(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "d1_30"
    if days_past_due <= 60:
        return "d31_60"
    if days_past_due <= 90:
        return "d61_90"
    return "d90_plus"


def aging(invoices: Iterable[InvoiceFacts], as_of: date) -> dict[str, int]:
    """Open balances on `as_of` by bucket (minor units)."""
    totals = dict.fromkeys(BUCKETS, 0)
    for invoice in invoices:
        balance = invoice.balance_on(as_of)
        if balance:
            totals[bucket_of((as_of - invoice.due_on).days)] += balance
    return totals


def receivables(invoices: Iterable[InvoiceFacts], as_of: date) -> int:
    return sum(invoice.balance_on(as_of) for invoice in invoices)


def current_receivables(invoices: Iterable[InvoiceFacts], as_of: date) -> int:
    return sum(invoice.balance_on(as_of) for invoice in invoices if invoice.due_on >= as_of)


def credit_sales(invoices: Iterable[InvoiceFacts], start_exclusive: date, end: date) -> int:
    """Totals of invoices issued in (start, end] and not void by `end`."""
    return sum(i.total_minor for i in invoices
               if start_exclusive < i.issued_on <= end and i.exists_on(end))


def dso(invoices: Sequence[InvoiceFacts], as_of: date, window_days: int) -> Fraction | None:
    sales = credit_sales(invoices, as_of - timedelta(days=window_days), as_of)
    if sales <= 0:
        return None
    return Fraction(receivables(invoices, as_of), sales) * window_days


def best_possible_dso(invoices: Sequence[InvoiceFacts], as_of: date, window_days: int) -> Fraction | None:
    sales = credit_sales(invoices, as_of - timedelta(days=window_days), as_of)
    if sales <= 0:
        return None
    return Fraction(current_receivables(invoices, as_of), sales) * window_days


def countback_dso(invoices: Sequence[InvoiceFacts], as_of: date, max_months: int = 24) -> Fraction | None:
    remaining = receivables(invoices, as_of)
    if remaining == 0:
        return Fraction(0)
    days = Fraction(0)
    month_end = as_of
    earliest_issue = min((i.issued_on for i in invoices), default=as_of)
    for _ in range(max_months):
        month_start = month_end.replace(day=1)
        month_days = (month_end - month_start).days + 1
        sales = credit_sales(invoices, month_start - timedelta(days=1), month_end)
        if sales >= remaining:
            return days + Fraction(remaining, sales) * month_days
        remaining -= sales
        days += month_days
        if month_start <= earliest_issue:
            break
        month_end = month_start - timedelta(days=1)
    return None  # more receivables than sales in the horizon: countback is undefined


@dataclass(frozen=True)
class OverdueRate:
    by_count: Fraction | None
    by_amount: Fraction | None


def overdue_rate(invoices: Iterable[InvoiceFacts], as_of: date) -> OverdueRate:
    open_count = overdue_count = open_amount = overdue_amount = 0
    for invoice in invoices:
        balance = invoice.balance_on(as_of)
        if not balance:
            continue
        open_count += 1
        open_amount += balance
        if invoice.due_on < as_of:
            overdue_count += 1
            overdue_amount += balance
    return OverdueRate(
        by_count=Fraction(overdue_count, open_count) if open_count else None,
        by_amount=Fraction(overdue_amount, open_amount) if open_amount else None,
    )


def _paid_in_window(invoices: Iterable[InvoiceFacts], start_exclusive: date, end: date) -> list[tuple[InvoiceFacts, date]]:
    paid = []
    for invoice in invoices:
        paid_on = invoice.paid_on()
        if paid_on is not None and start_exclusive < paid_on <= end:
            paid.append((invoice, paid_on))
    return paid


def average_days_to_pay(invoices: Iterable[InvoiceFacts], as_of: date, window_days: int) -> Fraction | None:
    paid = _paid_in_window(invoices, as_of - timedelta(days=window_days), as_of)
    if not paid:
        return None
    return Fraction(sum((paid_on - invoice.issued_on).days for invoice, paid_on in paid), len(paid))


def on_time_ratio(invoices: Iterable[InvoiceFacts], as_of: date, window_days: int) -> Fraction | None:
    paid = _paid_in_window(invoices, as_of - timedelta(days=window_days), as_of)
    if not paid:
        return None
    return Fraction(sum(1 for invoice, paid_on in paid if paid_on <= invoice.due_on), len(paid))


@dataclass(frozen=True)
class Drift:
    previous: Fraction | None
    current: Fraction | None

    @property
    def change(self) -> Fraction | None:
        if self.previous is None or self.current is None:
            return None
        return self.current - self.previous


def days_to_pay_drift(invoices: Sequence[InvoiceFacts], as_of: date, window_days: int) -> Drift:
    return Drift(previous=average_days_to_pay(invoices, as_of - timedelta(days=window_days), window_days),
                 current=average_days_to_pay(invoices, as_of, window_days))


@dataclass(frozen=True)
class AutopayChange:
    client_id: str
    on: date
    enrolled: bool


def autopay_adoption(invoices: Sequence[InvoiceFacts], changes: Iterable[AutopayChange], as_of: date,
                     window_days: int) -> Fraction | None:
    """Enrolled share of active clients: those with an open balance on D or an invoice in the window."""
    start = as_of - timedelta(days=window_days)
    active = {i.client_id for i in invoices
              if i.balance_on(as_of) > 0 or (start < i.issued_on <= as_of and i.exists_on(as_of))}
    if not active:
        return None
    latest: dict[str, AutopayChange] = {}
    for change in sorted(changes, key=lambda c: c.on):
        if change.on <= as_of:
            latest[change.client_id] = change
    enrolled = sum(1 for client in active if client in latest and latest[client].enrolled)
    return Fraction(enrolled, len(active))


def collection_effectiveness(invoices: Sequence[InvoiceFacts], as_of: date, window_days: int) -> Fraction | None:
    start = as_of - timedelta(days=window_days)
    beginning = receivables(invoices, start)
    sales = credit_sales(invoices, start, as_of)
    ending = receivables(invoices, as_of)
    collectible = beginning + sales - current_receivables(invoices, as_of)
    if collectible <= 0:
        return None
    return Fraction(beginning + sales - ending, collectible) * 100


@dataclass(frozen=True)
class Snapshot:
    """Every metric for one date and window: what the KPI tiles and a series point show."""

    as_of: date
    window_days: int
    receivables_minor: int
    current_minor: int
    aging: dict[str, int]
    credit_sales_minor: int
    dso: Fraction | None
    countback_dso: Fraction | None
    best_possible_dso: Fraction | None
    overdue: OverdueRate
    on_time_ratio: Fraction | None
    average_days_to_pay: Fraction | None
    drift: Drift
    autopay_adoption: Fraction | None
    cei: Fraction | None
    open_invoices: int


def snapshot(invoices: Sequence[InvoiceFacts], changes: Sequence[AutopayChange], as_of: date,
             window_days: int) -> Snapshot:
    return Snapshot(
        as_of=as_of,
        window_days=window_days,
        receivables_minor=receivables(invoices, as_of),
        current_minor=current_receivables(invoices, as_of),
        aging=aging(invoices, as_of),
        credit_sales_minor=credit_sales(invoices, as_of - timedelta(days=window_days), as_of),
        dso=dso(invoices, as_of, window_days),
        countback_dso=countback_dso(invoices, as_of),
        best_possible_dso=best_possible_dso(invoices, as_of, window_days),
        overdue=overdue_rate(invoices, as_of),
        on_time_ratio=on_time_ratio(invoices, as_of, window_days),
        average_days_to_pay=average_days_to_pay(invoices, as_of, window_days),
        drift=days_to_pay_drift(invoices, as_of, window_days),
        autopay_adoption=autopay_adoption(invoices, changes, as_of, window_days),
        cei=collection_effectiveness(invoices, as_of, window_days),
        open_invoices=sum(1 for i in invoices if i.balance_on(as_of) > 0),
    )


def period_ends(start: date, end: date, interval: str) -> list[date]:
    """The last day of each day/week (Sunday)/month from `start` to `end`, the last one clipped to `end`."""
    if start > end:
        return []
    points: list[date] = []
    cursor = start
    while cursor <= end:
        if interval == "day":
            point = cursor
        elif interval == "week":
            point = cursor + timedelta(days=6 - cursor.weekday())
        elif interval == "month":
            point = cursor.replace(day=calendar.monthrange(cursor.year, cursor.month)[1])
        else:
            raise ValueError(f"unknown interval {interval!r}")
        points.append(min(point, end))
        cursor = point + timedelta(days=1)
    return points
