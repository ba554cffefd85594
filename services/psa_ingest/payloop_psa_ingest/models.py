"""ORM models of the psa_ingest service (its own MetaData, its own database).

Every table carries tenant_id; every query filters by it (repository.py).
"""
from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, DateTime, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from payloop.db import Base


class PsaIngestBase(Base):
    __abstract__ = True


metadata = PsaIngestBase.metadata


# A connection the tenant disconnected: no syncs, no write-backs, no webhooks; its records and history stay.
DISCONNECTED = "disconnected"


class Connection(PsaIngestBase):
    """One tenant's link to one PSA. Credentials are a Fernet token (payloop.secrets), never returned."""

    __tablename__ = "psa_connections"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), index=True)
    source: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str] = mapped_column(Text)
    credentials_encrypted: Mapped[str] = mapped_column(Text)
    credentials_hint: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | error | paused | disconnected
    last_error: Mapped[str | None] = mapped_column(Text)
    # Per entity kind: the newest vendor "last updated" stored so far (ISO instant).
    cursors: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    poll_interval_s: Mapped[int] = mapped_column(Integer, default=300)
    next_sync_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sync_lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    webhook_ids: Mapped[list[str]] = mapped_column(JSONB, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(),
                                                 onupdate=func.now())


class SyncRun(PsaIngestBase):
    __tablename__ = "psa_sync_runs"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), index=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), index=True)
    trigger: Mapped[str] = mapped_column(String(20))  # manual | poll | webhook
    full: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | succeeded | failed
    counts: Mapped[dict[str, int]] = mapped_column(JSONB, default=dict)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PsaRecord(PsaIngestBase):
    """A client, agreement, invoice, credit memo or ticket as last seen in the PSA, under our id.

    `data` is the normalized event payload last published; `content_hash` decides whether a re-read
    changed anything (no change, no event).
    """

    __tablename__ = "psa_records"
    __table_args__ = (UniqueConstraint("connection_id", "kind", "external_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), index=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    kind: Mapped[str] = mapped_column(String(20))  # client | agreement | invoice | credit_memo | ticket
    external_id: Mapped[str] = mapped_column(String(100))
    client_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    number: Mapped[str | None] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PaymentWriteback(PsaIngestBase):
    """One payment (or refund) applied to one invoice in the PSA. `reference` is unique per effect and
    is sent to the PSA, so a retry finds what an earlier attempt already applied."""

    __tablename__ = "psa_payment_writebacks"
    __table_args__ = (UniqueConstraint("tenant_id", "reference"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), index=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    payment_id: Mapped[str] = mapped_column(String(100))
    invoice_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    client_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    reference: Mapped[str] = mapped_column(String(200))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    paid_on: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(20), default="pending")  # pending | recorded | failed
    external_id: Mapped[str | None] = mapped_column(String(100))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    causation_id: Mapped[str | None] = mapped_column(String(100))
    correlation_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(),
                                                 onupdate=func.now())


class WebhookReceipt(PsaIngestBase):
    """A verified PSA callback, stored once per (connection, vendor message id): the inbox idea."""

    __tablename__ = "psa_webhook_receipts"
    __table_args__ = (UniqueConstraint("connection_id", "message_id"),)

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(100), index=True)
    connection_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    message_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str | None] = mapped_column(String(20))
    external_id: Mapped[str | None] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
