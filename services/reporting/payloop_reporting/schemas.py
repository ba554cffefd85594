"""API models of the reporting service. Money is integer minor units with its currency; ratios are
0..1 (CEI 0..100) and day counts are rounded for display only, never used as money."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Bucket = Literal["current", "d1_30", "d31_60", "d61_90", "d90_plus"]
CollectionState = Literal["none", "active", "escalated", "paused", "promised"]
ExceptionKind = Literal["payment_failed", "payment_disputed", "psa_sync_failed", "gl_post_failed", "unmatched_payout",
                        "dead_letter"]


class Buckets(BaseModel):
    current: int = Field(description="Not yet due (0 or fewer days past due), minor units")
    d1_30: int = Field(description="1-30 days past due, minor units")
    d31_60: int = Field(description="31-60 days past due, minor units")
    d61_90: int = Field(description="61-90 days past due, minor units")
    d90_plus: int = Field(description="More than 90 days past due, minor units")
    total: int = Field(description="All open balances, minor units")


class ClientAging(BaseModel):
    client_id: str
    name: str | None
    buckets: Buckets
    open_invoices: int
    oldest_days_past_due: int | None
    autopay_enrolled: bool
    collection_state: str
    collection_level: str | None
    promised_on: date | None


class AgingReport(BaseModel):
    as_of: date
    currency: str
    totals: Buckets
    clients: list[ClientAging]
    next_cursor: str | None


class InvoiceAging(BaseModel):
    invoice_id: str
    client_id: str
    client_name: str | None
    number: str
    currency: str
    issued_on: date
    due_on: date
    days_past_due: int
    bucket: Bucket
    total_minor: int
    balance_minor: int
    status: str
    agreement_kind: str | None
    autopay_enrolled: bool
    collection_state: str
    failed_attempts: int
    next_retry_at: datetime | None
    last_payment_at: datetime | None
    disputed: bool
    promised_on: date | None
    last_reminder_step: int | None
    last_reminder_level: str | None
    last_reminder_at: datetime | None


class InvoiceAgingPage(BaseModel):
    as_of: date
    items: list[InvoiceAging]
    next_cursor: str | None


class OverdueRate(BaseModel):
    by_count: float | None = Field(description="Past-due open invoices / open invoices")
    by_amount: float | None = Field(description="Past-due AR / AR")


class DaysToPayDrift(BaseModel):
    previous: float | None = Field(description="Average days-to-pay over the window before this one")
    current: float | None = Field(description="Average days-to-pay over this window")
    change: float | None = Field(description="current - previous, in days")


class Metrics(BaseModel):
    as_of: date
    window_days: int
    currency: str
    client_id: str | None
    receivables_minor: int = Field(description="AR: open balances on as_of")
    current_minor: int = Field(description="The part of AR not yet due")
    credit_sales_minor: int = Field(description="Totals of invoices issued in the window, not void")
    aging: Buckets
    open_invoices: int
    dso: float | None = Field(description="AR / credit sales x window days")
    countback_dso: float | None = Field(description="Months of sales, newest first, that AR covers, in days")
    best_possible_dso: float | None = Field(description="Current AR / credit sales x window days")
    overdue_rate: OverdueRate
    on_time_ratio: float | None = Field(description="Invoices paid in the window on or before their due date / paid")
    average_days_to_pay: float | None = Field(description="Mean of paid date - issue date over invoices paid in the window")
    days_to_pay_drift: DaysToPayDrift
    autopay_adoption: float | None = Field(description="Enrolled clients / clients with AR or an invoice in the window")
    cei: float | None = Field(description="Collection effectiveness index, 0-100")


class MetricsSeries(BaseModel):
    interval: Literal["day", "week", "month"]
    currency: str
    client_id: str | None
    points: list[Metrics]


class DriftAlert(BaseModel):
    client_id: str
    name: str | None
    previous_days: float
    current_days: float
    change_days: float
    message: str


class DriftReport(BaseModel):
    as_of: date
    window_days: int
    threshold_days: int
    alerts: list[DriftAlert]


class ExceptionItem(BaseModel):
    exception_id: str
    kind: ExceptionKind
    client_id: str | None
    subject_id: str
    title: str
    detail: str
    action: str = Field(description="What to do about it")
    action_href: str | None = Field(description="Where to do it, when there is a place")
    retryable: bool
    next_attempt_at: datetime | None
    occurred_at: datetime
    resolved_at: datetime | None


class ExceptionPage(BaseModel):
    items: list[ExceptionItem]
    next_cursor: str | None


class Agreement(BaseModel):
    agreement_id: str
    kind: str
    name: str
    billing_cycle: str | None
    starts_on: date | None
    ends_on: date | None
    lines: list[dict[str, Any]]


class ClientInvoice(BaseModel):
    invoice_id: str
    number: str
    currency: str
    issued_on: date
    due_on: date
    total_minor: int
    balance_minor: int
    status: str
    agreement_kind: str | None
    paid_at: datetime | None
    failed_attempts: int
    next_retry_at: datetime | None
    last_payment_at: datetime | None
    disputed: bool
    promised_on: date | None
    last_reminder_step: int | None
    last_reminder_level: str | None
    last_reminder_at: datetime | None


class ClientPayment(BaseModel):
    payment_id: str
    status: str
    currency: str
    amount_minor: int
    fee_minor: int
    refunded_minor: int
    method_type: str | None
    method_brand: str | None
    method_last4: str | None
    attempt: int
    settled_at: datetime | None
    status_at: datetime
    allocations: list[dict[str, Any]]


class TimelineEntry(BaseModel):
    event_id: str
    occurred_at: datetime
    kind: str
    summary: str
    amount_minor: int | None
    currency: str | None
    invoice_ids: list[str]


class TrendPoint(BaseModel):
    period_end: date
    average_days_to_pay: float | None
    on_time_ratio: float | None
    receivables_minor: int


class ClientDetail(BaseModel):
    client_id: str
    name: str | None
    psa_source: str | None
    terms: str | None
    billing_emails: list[str]
    contract_kinds: list[str]
    agreements: list[Agreement]
    autopay_enrolled: bool
    autopay_method_id: str | None
    collection_state: str
    collection_level: str | None
    collection_step: int | None
    paused_reason: str | None
    paused_until: date | None
    promised_on: date | None
    promised_minor: int | None
    metrics: Metrics
    invoices: list[ClientInvoice]
    payments: list[ClientPayment]
    timeline: list[TimelineEntry]
    trend: list[TrendPoint] = Field(description="Monthly behaviour over the last 12 months")
