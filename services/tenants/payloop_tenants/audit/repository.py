"""Queries of the audit log; each filters by tenant."""
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from payloop_tenants.models import AuditEntry


async def page(session: AsyncSession, tenant_id: str, *, action: str | None, target_type: str | None,
               target_id: str | None, since: datetime | None, before_seq: int | None,
               limit: int) -> list[AuditEntry]:
    """Newest first; the cursor is the `seq` of the last entry of the previous page."""
    query = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
    if action:
        query = query.where(AuditEntry.action == action)
    if target_type:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id:
        query = query.where(AuditEntry.target_id == target_id)
    if since:
        query = query.where(AuditEntry.occurred_at >= since)
    if before_seq is not None:
        query = query.where(AuditEntry.seq < before_seq)
    return list(await session.scalars(query.order_by(AuditEntry.seq.desc()).limit(limit)))
