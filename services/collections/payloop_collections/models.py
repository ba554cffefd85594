"""ORM models of the collections service (its own MetaData, its own database).

Local state is built from events (clients, invoices, payments), plus what collections owns:
policies, steps decided per invoice, outgoing email, promises, escalation tasks, the timeline and
client payment behaviour. Every table is keyed by tenant first.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger, Boolean, Date, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from payloop.db import Base


class CollectionsBase(Base):
    __abstract__ = True  # gets a registry and MetaData of its own (payloop.db.Base)


def _now_column() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now())


class Client(CollectionsBase):
    """A client as collections knows it: contacts, auto-pay, its case state and policy override."""

    __tablename__ = "clients"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    case_id: Mapped[uuid.UUID] = mapped_column(UUID)
    name: Mapped[str] = mapped_column(String(300), default="")
    billing_emails: Mapped[list[str]] = mapped_column(JSONB, default=list)
    timezone: Mapped[str | None] = mapped_column(String(64))
    autopay_enrolled: Mapped[bool] = mapped_column(Boolean, default=False)
    autopay_rule: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    policy_id: Mapped[str | None] = mapped_column(String(64))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    paused_until: Mapped[date | None] = mapped_column(Date)
    drifting: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = _now_column()


class Invoice(CollectionsBase):
    __tablename__ = "invoices"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    number: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    issued_on: Mapped[date] = mapped_column(Date)
    due_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    # The balance the PSA reports; what we collected ourselves is in `invoice_payments`.
    psa_balance_minor: Mapped[int] = mapped_column(BigInteger)
    agreement: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    event_occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    dispute_ticket_id: Mapped[str | None] = mapped_column(String(128))
    installment_plan_id: Mapped[str | None] = mapped_column(String(128))
    payment_in_flight_id: Mapped[str | None] = mapped_column(String(128))
    payment_in_flight_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retry_attempt: Mapped[int | None] = mapped_column(Integer)
    autopay_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    paid_on: Mapped[date | None] = mapped_column(Date)


class InvoicePayment(CollectionsBase):
    """Money we collected against an invoice (net of refunds), one row per payment allocation."""

    __tablename__ = "invoice_payments"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    settled_on: Mapped[date] = mapped_column(Date)


class Policy(CollectionsBase):
    __tablename__ = "policies"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    business_days: Mapped[bool] = mapped_column(Boolean, default=True)
    send_hour: Mapped[int] = mapped_column(Integer, default=9)
    quiet_start_hour: Mapped[int] = mapped_column(Integer, default=20)
    quiet_end_hour: Mapped[int] = mapped_column(Integer, default=8)
    drift_shift_days: Mapped[int] = mapped_column(Integer, default=2)
    drift_firmer: Mapped[bool] = mapped_column(Boolean, default=True)
    autopay_courtesy: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = _now_column()


class Message(CollectionsBase):
    """One consolidated email per client per local day, sent (and retried) by the mail sender."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("tenant_id", "client_id", "local_date", name="messages_one_per_day"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(128))
    local_date: Mapped[date] = mapped_column(Date)
    recipients: Mapped[list[str]] = mapped_column(JSONB)
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(String(20))
    step: Mapped[int] = mapped_column(Integer)
    template: Mapped[str] = mapped_column(String(64))
    invoice_ids: Mapped[list[str]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    delivered_to: Mapped[list[str]] = mapped_column(JSONB, default=list)
    bounced: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)  # address -> SMTP reply
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReminderStep(CollectionsBase):
    """A step decided for an invoice; the primary key makes each step happen exactly once."""

    __tablename__ = "reminder_steps"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    invoice_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    step_key: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(20))
    offset_days: Mapped[int] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID, ForeignKey("messages.id"))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Promise(CollectionsBase):
    __tablename__ = "promises"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(128))
    invoice_ids: Mapped[list[str]] = mapped_column(JSONB)
    promised_on: Mapped[date] = mapped_column(Date)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | kept | broken
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EscalationTask(CollectionsBase):
    __tablename__ = "escalation_tasks"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(128))
    case_id: Mapped[uuid.UUID] = mapped_column(UUID)
    invoice_ids: Mapped[list[str]] = mapped_column(JSONB)
    level: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default="open")
    context: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    done_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_by: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)


class TimelineEntry(CollectionsBase):
    __tablename__ = "timeline"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    client_id: Mapped[str] = mapped_column(String(128))
    invoice_id: Mapped[str | None] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OptOut(CollectionsBase):
    __tablename__ = "email_opt_outs"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    created_at: Mapped[datetime] = _now_column()


class ClientBehaviour(CollectionsBase):
    __tablename__ = "client_behaviour"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    samples: Mapped[int] = mapped_column(Integer)
    average_days_to_pay: Mapped[float] = mapped_column(Float)
    recent_days_to_pay: Mapped[float | None] = mapped_column(Float)
    baseline_days_to_pay: Mapped[float | None] = mapped_column(Float)
    on_time_ratio: Mapped[float] = mapped_column(Float)
    drifting: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[datetime] = _now_column()


metadata = CollectionsBase.metadata
