"""Event handler: every domain event of a tenant with endpoints becomes a message and its deliveries.

It runs inside the consumer's transaction with the inbox claim, so an event creates its deliveries
exactly once however often Kafka redelivers it.
"""
from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.events.catalogue import EventData
from payloop.events.envelope import Envelope
from payloop.ids import uuid7

from payloop_tenants.models import WebhookDelivery, WebhookMessage
from payloop_tenants.webhooks import repository


def message_body(envelope: Envelope, data: EventData) -> dict:
    """What a partner receives: the Standard Webhooks shape (`type`, `timestamp`, `data`) plus our ids."""
    return {
        "id": str(envelope.id),
        "type": envelope.type,
        "version": envelope.version,
        "timestamp": envelope.occurred_at.isoformat(),
        "tenant_id": envelope.tenant_id,
        "client_id": envelope.client_id,
        "data": data.model_dump(mode="json"),
    }


async def fan_out(session: AsyncSession, envelope: Envelope, data: EventData) -> None:
    endpoints = await repository.endpoints_of(session, envelope.tenant_id)
    if not endpoints:
        return  # most events of most tenants: nothing to keep
    # Kept even when no endpoint matches now, so a range replay can send it later.
    await session.execute(insert(WebhookMessage).values(
        event_id=envelope.id, tenant_id=envelope.tenant_id, event_type=envelope.type,
        occurred_at=envelope.occurred_at, payload=message_body(envelope, data),
    ).on_conflict_do_nothing())
    for endpoint in endpoints:
        if endpoint.status == "enabled" and (not endpoint.event_types or envelope.type in endpoint.event_types):
            session.add(WebhookDelivery(id=uuid7(), tenant_id=envelope.tenant_id, endpoint_id=endpoint.id,
                                        event_id=envelope.id, event_type=envelope.type))
    await session.flush()
