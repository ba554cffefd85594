"""Event handler: keep every `audit.recorded`, from any service, in the tenant's audit log."""
from uuid import UUID

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.events.catalogue import AuditRecordedV1
from payloop.events.envelope import Envelope

from payloop_tenants.models import AuditEntry


async def store_audit_entry(session: AsyncSession, envelope: Envelope, data: AuditRecordedV1) -> None:
    await session.execute(insert(AuditEntry).values(
        id=UUID(data.audit_id), tenant_id=envelope.tenant_id, occurred_at=envelope.occurred_at,
        service=envelope.producer, action=data.action, actor_subject=data.actor.subject,
        actor_scopes=data.actor.scopes, target_type=data.target.type, target_id=data.target.id,
        details=data.details, event_id=envelope.id,
    ).on_conflict_do_nothing())
