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
    await fan_out_many(session, [(envelope, data)])


async def fan_out_many(session: AsyncSession, run: list[tuple[Envelope, EventData]]) -> None:
    endpoints = {tenant_id: await repository.endpoints_of(session, tenant_id)
                 for tenant_id in dict.fromkeys(envelope.tenant_id for envelope, _ in run)}
    kept = [(envelope, data) for envelope, data in run if endpoints[envelope.tenant_id]]
    if not kept:
        return  # most events of most tenants: nothing to keep
    # Kept even when no endpoint matches now, so a range replay can send it later.
    await session.execute(insert(WebhookMessage.__table__).on_conflict_do_nothing(), [dict(
        event_id=envelope.id, tenant_id=envelope.tenant_id, event_type=envelope.type,
        occurred_at=envelope.occurred_at, payload=message_body(envelope, data),
    ) for envelope, data in kept])
    for envelope, _ in kept:
        for endpoint in endpoints[envelope.tenant_id]:
            if endpoint.status == "enabled" and (not endpoint.event_types or envelope.type in endpoint.event_types):
                session.add(WebhookDelivery(id=uuid7(), tenant_id=envelope.tenant_id, endpoint_id=endpoint.id,
                                            event_id=envelope.id, event_type=envelope.type))
    await session.flush()
