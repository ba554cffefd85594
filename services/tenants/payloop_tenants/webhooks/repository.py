"""Every query of partner webhooks; each filters by tenant."""
from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import and_, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from payloop_tenants.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage


async def endpoints_of(session: AsyncSession, tenant_id: str) -> list[WebhookEndpoint]:
    rows = await session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id)
                                 .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id))
    return list(rows)


async def endpoint(session: AsyncSession, tenant_id: str, endpoint_id: UUID, *,
                   for_update: bool = False) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(WebhookEndpoint.tenant_id == tenant_id,
                                          WebhookEndpoint.id == endpoint_id)
    if for_update:
        query = query.with_for_update()
    return await session.scalar(query)


async def delivery(session: AsyncSession, tenant_id: str, endpoint_id: UUID,
                   delivery_id: UUID) -> WebhookDelivery | None:
    return await session.scalar(select(WebhookDelivery).where(
        WebhookDelivery.tenant_id == tenant_id, WebhookDelivery.endpoint_id == endpoint_id,
        WebhookDelivery.id == delivery_id))


async def deliveries_page(session: AsyncSession, tenant_id: str, endpoint_id: UUID, *, status: str | None,
                          after_seq: int | None, limit: int) -> list[WebhookDelivery]:
    """Newest first; the cursor is the `seq` of the last row of the previous page."""
    query = select(WebhookDelivery).where(WebhookDelivery.tenant_id == tenant_id,
                                          WebhookDelivery.endpoint_id == endpoint_id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    if after_seq is not None:
        query = query.where(WebhookDelivery.seq < after_seq)
    return list(await session.scalars(query.order_by(WebhookDelivery.seq.desc()).limit(limit)))


async def attempts(session: AsyncSession, tenant_id: str, delivery_id: UUID) -> list[WebhookAttempt]:
    return list(await session.scalars(select(WebhookAttempt).where(
        WebhookAttempt.tenant_id == tenant_id, WebhookAttempt.delivery_id == delivery_id
    ).order_by(WebhookAttempt.id)))


async def messages_between(session: AsyncSession, tenant_id: str, since: datetime, until: datetime,
                           event_types: list[str], *, undelivered_to: UUID | None) -> list[WebhookMessage]:
    query = select(WebhookMessage).where(WebhookMessage.tenant_id == tenant_id,
                                         WebhookMessage.occurred_at >= since, WebhookMessage.occurred_at < until)
    if event_types:
        query = query.where(WebhookMessage.event_type.in_(event_types))
    if undelivered_to is not None:
        query = query.where(~exists().where(and_(
            WebhookDelivery.event_id == WebhookMessage.event_id, WebhookDelivery.endpoint_id == undelivered_to,
            WebhookDelivery.status == "succeeded")))
    return list(await session.scalars(query.order_by(WebhookMessage.occurred_at, WebhookMessage.event_id)))


async def due_endpoint_ids(session: AsyncSession, now: datetime, limit: int) -> list[UUID]:
    """Enabled endpoints whose oldest pending delivery is due (a later one never overtakes it)."""
    head = (select(WebhookDelivery.endpoint_id, func.min(WebhookDelivery.seq).label("seq"))
            .where(WebhookDelivery.status == "pending").group_by(WebhookDelivery.endpoint_id).subquery())
    query = (select(WebhookDelivery.endpoint_id)
             .join(head, and_(head.c.endpoint_id == WebhookDelivery.endpoint_id, head.c.seq == WebhookDelivery.seq))
             .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
             .where(WebhookEndpoint.status == "enabled", WebhookDelivery.next_attempt_at <= now)
             .limit(limit))
    return list(await session.scalars(query))


async def lock_enabled_endpoint(session: AsyncSession, endpoint_id: UUID) -> WebhookEndpoint | None:
    """The endpoint, locked for this transaction, or None if disabled or another sender holds it."""
    return await session.scalar(select(WebhookEndpoint).where(
        WebhookEndpoint.id == endpoint_id, WebhookEndpoint.status == "enabled"
    ).with_for_update(skip_locked=True))


async def head_delivery(session: AsyncSession, endpoint_id: UUID) -> WebhookDelivery | None:
    return await session.scalar(select(WebhookDelivery).where(
        WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == "pending"
    ).order_by(WebhookDelivery.seq).limit(1))


async def message(session: AsyncSession, event_id: UUID) -> WebhookMessage | None:
    return await session.get(WebhookMessage, event_id)
