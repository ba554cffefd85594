"""ORM models of the gl_posting service (its own MetaData, its own database).

Every table carries `tenant_id`; money is BIGINT minor units; OAuth tokens are stored encrypted.
"""
from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, DateTime, ForeignKey, Integer, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from payloop.db import Base


class GlPostingBase(Base):
    __abstract__ = True


metadata = GlPostingBase.metadata


class Connection(GlPostingBase):
    """A tenant's accounting system: one per tenant; reconnecting replaces the tokens."""

    __tablename__ = "gl_connections"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    system: Mapped[str] = mapped_column(Text)  # quickbooks | xero
    status: Mapped[str] = mapped_column(Text)  # authorizing | connected | revoked | failed
    company_id: Mapped[str] = mapped_column(Text)  # QuickBooks realm id or Xero tenant id
    redirect_uri: Mapped[str] = mapped_column(Text)
    authorization_code_enc: Mapped[str | None] = mapped_column(Text)
    access_token_enc: Mapped[str | None] = mapped_column(Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(Text)
    access_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    connected_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AccountMapping(GlPostingBase):
    __tablename__ = "gl_account_mappings"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    clearing_account_id: Mapped[str] = mapped_column(Text)
    bank_account_id: Mapped[str] = mapped_column(Text)
    fee_account_id: Mapped[str] = mapped_column(Text)
    refunds_account_id: Mapped[str] = mapped_column(Text)
    receivable_account_id: Mapped[str | None] = mapped_column(Text)
    refund_item_id: Mapped[str | None] = mapped_column(Text)
    convenience_fee_account_id: Mapped[str | None] = mapped_column(Text)
    customer_rule: Mapped[str] = mapped_column(Text, default="invoice_customer")
    validated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Invoice(GlPostingBase):
    """What we know of an invoice from invoice.* events: enough to find it in the accounting system."""

    __tablename__ = "gl_invoices"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    invoice_id: Mapped[str] = mapped_column(Text, primary_key=True)
    number: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    total_minor: Mapped[int] = mapped_column(BigInteger)
    balance_minor: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class IdMap(GlPostingBase):
    """Our id -> the accounting system's id (invoices, customers), learned once and reused."""

    __tablename__ = "gl_id_map"
    tenant_id: Mapped[str] = mapped_column(Text, primary_key=True)
    system: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text, primary_key=True)
    our_id: Mapped[str] = mapped_column(Text, primary_key=True)
    external_id: Mapped[str] = mapped_column(Text)
    extra: Mapped[dict] = mapped_column(JSONB, default=dict)


class Entry(GlPostingBase):
    """One journal entry and the state of its posting to the accounting system."""

    __tablename__ = "gl_entries"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, server_default=text("nextval('gl_entries_seq')"))
    tenant_id: Mapped[str] = mapped_column(Text)
    source_event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    purpose: Mapped[str] = mapped_column(Text)
    subject_id: Mapped[str] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str] = mapped_column(Text)
    occurred_on: Mapped[date] = mapped_column(Date)
    reference: Mapped[str] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(JSONB)
    # pending -> sending -> posted; failed waits for an operator's retry.
    state: Mapped[str] = mapped_column(Text, default="pending")
    system: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # True once a call may have reached the vendor: the next attempt looks before it posts.
    may_have_applied: Mapped[bool] = mapped_column(Boolean, default=False)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Line(GlPostingBase):
    __tablename__ = "gl_journal_lines"
    entry_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("gl_entries.id"), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text)
    account: Mapped[str] = mapped_column(Text)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    memo: Mapped[str] = mapped_column(Text, default="")


class PostingException(GlPostingBase):
    """Why an entry is not posted, for an operator to see and retry."""

    __tablename__ = "gl_exceptions"
    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text)
    entry_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), ForeignKey("gl_entries.id"))
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text)
    retryable: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(Text, default="open")  # open | resolved
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ConsentState(GlPostingBase):
    """A consent state the callback has used (states are sealed and expire; this makes them single-use)."""

    __tablename__ = "gl_consent_states"
    nonce: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
