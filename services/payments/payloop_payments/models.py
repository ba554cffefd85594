"""ORM models of the payments service (its own MetaData, its own database).

Every table carries `tenant_id`; money is BIGINT minor units with the currency beside it.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, String, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from payloop.db import Base
from payloop.ids import uuid7


class PaymentsBase(Base):
    __abstract__ = True


def _now_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Client(PaymentsBase):
    """A client as `client.upserted` describes it, plus its processor customer and credit."""

    __tablename__ = "clients"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    billing_emails: Mapped[list[str]] = mapped_column(JSONB, default=list)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64))
    credit_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = _now_column()


class Invoice(PaymentsBase):
    """An invoice as the PSA reports it, and what Payloop collected or has in flight against it."""

    __tablename__ = "invoices"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), index=True)
    number: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    issued_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    psa_balance_minor: Mapped[int] = mapped_column(BigInteger)
    credited_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    collected_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    pending_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    line_kinds: Mapped[list[str]] = mapped_column(JSONB, default=list)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    agreement: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    source_occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now_column()


class CreditMemo(PaymentsBase):
    __tablename__ = "credit_memos"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    credit_memo_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    created_at: Mapped[datetime] = _now_column()


class CreditMemoApplication(PaymentsBase):
    """Part of a credit memo applied to an invoice; kept because topics are not ordered with each
    other, so the memo may arrive before the invoice it reduces."""

    __tablename__ = "credit_memo_applications"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    credit_memo_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)


class PaymentMethod(PaymentsBase):
    """A processor token for a card or bank account: never a raw number."""

    __tablename__ = "payment_methods"
    __table_args__ = (UniqueConstraint("tenant_id", "stripe_payment_method_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid7)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    stripe_payment_method_id: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(8))  # card | ach
    brand: Mapped[str | None] = mapped_column(String(64))
    last4: Mapped[str | None] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|unusable|revoked|detached
    status_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _now_column()


class AutopayEnrollment(PaymentsBase):
    __tablename__ = "autopay_enrollments"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    payment_method_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_methods.id"))
    rule: Mapped[str] = mapped_column(String(20))  # on_issue | on_due | days_before_due
    days_before_due: Mapped[int] = mapped_column(Integer, default=0)
    cap_minor: Mapped[int | None] = mapped_column(BigInteger)
    excluded_kinds: Mapped[list[str]] = mapped_column(JSONB, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    inactive_reason: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = _now_column()


class Payment(PaymentsBase):
    """Money collected (or being collected) from a client, allocated to invoices.

    `idempotency_key` is unique per tenant: the API's Idempotency-Key, `autopay:<invoice>` for the
    scheduler and `installment:<part>` for plans, so a double click or a second scheduler finds the
    existing payment instead of charging again.
    """

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid7)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(16))  # autopay | checkout | installment | manual
    payment_method_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_methods.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    credit_minor: Mapped[int] = mapped_column(BigInteger, default=0)  # overpayment kept as client credit
    fee_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # A card convenience fee charged on top of amount_minor: the MSP's income, allocated to no invoice.
    surcharge_minor: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    disputed_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    # pending|processing|succeeded|failed|refunded|partially_refunded|disputed
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempt_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    last_decline_code: Mapped[str | None] = mapped_column(String(64))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(64), index=True)
    stripe_charge_id: Mapped[str | None] = mapped_column(String(64), index=True)
    installment_part_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = _now_column()
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PaymentAllocation(PaymentsBase):
    __tablename__ = "payment_allocations"

    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)


class PaymentAttempt(PaymentsBase):
    """One presentment to the processor. Written and committed before Stripe is called; its id is
    the Stripe Idempotency-Key, so a crash between the call and the outcome cannot charge twice."""

    __tablename__ = "payment_attempts"
    __table_args__ = (UniqueConstraint("payment_id", "attempt_no"), UniqueConstraint("payment_id", "idempotency_key"))

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid7)
    tenant_id: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"))
    payment_method_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_methods.id"), index=True)
    attempt_no: Mapped[int] = mapped_column(Integer)
    client_initiated: Mapped[bool] = mapped_column(Boolean)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))  # a client's retry: its Idempotency-Key
    status: Mapped[str] = mapped_column(String(16), default="created")  # created|processing|succeeded|failed
    decline_code: Mapped[str | None] = mapped_column(String(64))
    failure_message: Mapped[str | None] = mapped_column(String(500))
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Refund(PaymentsBase):
    __tablename__ = "refunds"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid7)
    tenant_id: Mapped[str] = mapped_column(String(64))
    payment_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payments.id"))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="created")  # created|succeeded|failed
    stripe_refund_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = _now_column()


class StripeEvent(PaymentsBase):
    """Every verified Stripe webhook, once: the unique event id makes redelivery a no-op."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = _now_column()
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str | None] = mapped_column(String(200))


class InstallmentPlan(PaymentsBase):
    """An invoice balance split into scheduled parts, charged to a stored method by the scheduler."""

    __tablename__ = "installment_plans"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid7)
    tenant_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    invoice_id: Mapped[str] = mapped_column(String(128))
    payment_method_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("payment_methods.id"))
    idempotency_key: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | cancelled
    created_at: Mapped[datetime] = _now_column()


class InstallmentPart(PaymentsBase):
    """One scheduled part; its payment (idempotency key `installment:<part id>`) tells how it went."""

    __tablename__ = "installment_parts"
    __table_args__ = (UniqueConstraint("plan_id", "seq"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True, default=uuid7)
    plan_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("installment_plans.id"))
    tenant_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    due_on: Mapped[date] = mapped_column(Date)
    amount_minor: Mapped[int] = mapped_column(BigInteger)


metadata = PaymentsBase.metadata
