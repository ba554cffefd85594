"""Every query of the psa_ingest service; each one bounded by tenant_id."""
from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from payloop_psa_ingest.models import DISCONNECTED, Connection, PaymentWriteback, PsaRecord, SyncRun


async def get_connection(session: AsyncSession, tenant_id: str, connection_id: uuid.UUID) -> Connection | None:
    return (await session.execute(select(Connection).where(
        Connection.id == connection_id, Connection.tenant_id == tenant_id))).scalar_one_or_none()


async def get_connection_any_tenant(session: AsyncSession, connection_id: uuid.UUID) -> Connection | None:
    """Only for webhook receipt, where the connection id in the URL is what names the tenant."""
    return await session.get(Connection, connection_id)


async def list_connections(session: AsyncSession, tenant_id: str) -> list[Connection]:
    return list((await session.execute(select(Connection).where(Connection.tenant_id == tenant_id)
                                       .order_by(Connection.created_at))).scalars())


async def claim_sync_lease(session: AsyncSession, tenant_id: str, connection_id: uuid.UUID,
                           lease_s: int) -> Connection | None:
    """Take the connection's sync lease, so one sync at a time runs per connection across processes."""
    row = (await session.execute(text(
        "UPDATE psa_connections SET sync_lease_until = now() + make_interval(secs => :lease) "
        "WHERE id = :id AND tenant_id = :tenant AND status <> 'disconnected' "
        "AND (sync_lease_until IS NULL OR sync_lease_until < now()) "
        "RETURNING id"), {"id": connection_id, "tenant": tenant_id, "lease": lease_s})).first()
    if row is None:
        return None
    connection = await get_connection(session, tenant_id, connection_id)
    if connection is not None:
        await session.refresh(connection)
    return connection


async def due_connections(session: AsyncSession, now: datetime, limit: int = 20) -> list[tuple[str, uuid.UUID]]:
    rows = await session.execute(select(Connection.tenant_id, Connection.id).where(
        Connection.status.notin_(("paused", DISCONNECTED)), Connection.next_sync_at <= now,
        (Connection.sync_lease_until.is_(None)) | (Connection.sync_lease_until < now),
    ).order_by(Connection.next_sync_at).limit(limit))
    return [(t, i) for t, i in rows]


async def request_sync_now(session: AsyncSession, tenant_id: str, connection_id: uuid.UUID) -> None:
    await session.execute(update(Connection).where(Connection.id == connection_id, Connection.tenant_id == tenant_id)
                          .values(next_sync_at=text("now()")))


async def records_by_external_id(session: AsyncSession, connection_id: uuid.UUID, keys: list[tuple[str, str]]
                                 ) -> dict[tuple[str, str], PsaRecord]:
    """The stored records of these (kind, vendor id) pairs, by pair."""
    if not keys:
        return {}
    rows = await session.scalars(select(PsaRecord).where(
        PsaRecord.connection_id == connection_id,
        tuple_(PsaRecord.kind, PsaRecord.external_id).in_(list(dict.fromkeys(keys)))))
    return {(r.kind, r.external_id): r for r in rows}


async def record_by_id(session: AsyncSession, tenant_id: str, kind: str, record_id: uuid.UUID) -> PsaRecord | None:
    return (await session.execute(select(PsaRecord).where(
        PsaRecord.id == record_id, PsaRecord.tenant_id == tenant_id, PsaRecord.kind == kind))).scalar_one_or_none()


async def invoices_by_number(session: AsyncSession, connection_id: uuid.UUID, numbers: list[str]) -> list[PsaRecord]:
    if not numbers:
        return []
    return list((await session.execute(select(PsaRecord).where(
        PsaRecord.connection_id == connection_id, PsaRecord.kind == "invoice",
        PsaRecord.number.in_(numbers)).order_by(PsaRecord.number))).scalars())


async def list_records(session: AsyncSession, tenant_id: str, kind: str, *, after: uuid.UUID | None,
                       limit: int) -> list[PsaRecord]:
    query = select(PsaRecord).where(PsaRecord.tenant_id == tenant_id, PsaRecord.kind == kind)
    if after is not None:
        query = query.where(PsaRecord.id > after)
    return list((await session.execute(query.order_by(PsaRecord.id).limit(limit))).scalars())


async def list_sync_runs(session: AsyncSession, tenant_id: str, connection_id: uuid.UUID, limit: int = 50
                         ) -> list[SyncRun]:
    return list((await session.execute(select(SyncRun).where(
        SyncRun.tenant_id == tenant_id, SyncRun.connection_id == connection_id)
        .order_by(SyncRun.started_at.desc()).limit(limit))).scalars())


async def claim_due_writeback(session: AsyncSession, now: datetime) -> PaymentWriteback | None:
    """One write-back to attempt, locked so no other worker attempts it at the same time."""
    return (await session.execute(select(PaymentWriteback).where(
        PaymentWriteback.status.in_(("pending", "failed")),
        (PaymentWriteback.next_attempt_at.is_(None)) | (PaymentWriteback.next_attempt_at <= now),
    ).order_by(PaymentWriteback.created_at).limit(1).with_for_update(skip_locked=True))).scalar_one_or_none()


async def list_writebacks(session: AsyncSession, tenant_id: str, status: str | None, limit: int = 100
                          ) -> list[PaymentWriteback]:
    query = select(PaymentWriteback).where(PaymentWriteback.tenant_id == tenant_id)
    if status:
        query = query.where(PaymentWriteback.status == status)
    return list((await session.execute(query.order_by(PaymentWriteback.created_at.desc()).limit(limit))).scalars())


async def get_writeback(session: AsyncSession, tenant_id: str, writeback_id: uuid.UUID) -> PaymentWriteback | None:
    return (await session.execute(select(PaymentWriteback).where(
        PaymentWriteback.id == writeback_id, PaymentWriteback.tenant_id == tenant_id))).scalar_one_or_none()
