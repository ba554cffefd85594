"""Managing endpoints: create, change, rotate secrets, replay. Each sensitive action is audited."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal
from payloop.ids import uuid7
from payloop.problems import NotFound, Problem
from payloop.secrets import mask, secret_box
from payloop.settings import platform_settings

from payloop_tenants.models import WebhookDelivery, WebhookEndpoint
from payloop_tenants.webhooks import repository
from payloop_tenants.webhooks.destinations import UnsafeDestination, check_destination
from payloop_tenants.webhooks.schemas import EndpointCreate, EndpointOut, EndpointUpdate, EndpointWithSecret
from payloop_tenants.webhooks.signing import new_secret

PRODUCER = "tenants"
MAX_REPLAY = 10_000


async def _check_url(url: str) -> None:
    # Plain http only in dev and tests, where partners are local receivers.
    if platform_settings().env == "prod" and not url.startswith("https://"):
        raise Problem(422, "Invalid input", "webhook endpoints must use https")
    try:
        await check_destination(url)
    except UnsafeDestination as exc:
        raise Problem(422, "Invalid input", f"webhook endpoints must be on the public internet: {exc}") from None


def active_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign a request now: the current one, and the previous during its overlap."""
    box = secret_box()
    secrets_ = [box.decrypt(endpoint.secret_encrypted)]
    if (endpoint.previous_secret_encrypted and endpoint.previous_secret_expires_at
            and endpoint.previous_secret_expires_at > now):
        secrets_.append(box.decrypt(endpoint.previous_secret_encrypted))
    return secrets_


def to_out(endpoint: WebhookEndpoint, *, secret: str | None = None) -> EndpointOut:
    plain = secret or secret_box().decrypt(endpoint.secret_encrypted)
    fields = {c: getattr(endpoint, c) for c in EndpointOut.model_fields if c != "secret_hint"}
    fields["secret_hint"] = mask(plain)
    return EndpointWithSecret(**fields, secret=secret) if secret else EndpointOut(**fields)


async def _owned(session: AsyncSession, principal: Principal, endpoint_id: UUID) -> WebhookEndpoint:
    endpoint = await repository.endpoint(session, principal.tenant_id, endpoint_id, for_update=True)
    if endpoint is None:
        raise NotFound("webhook endpoint")
    return endpoint


async def create(session: AsyncSession, principal: Principal, body: EndpointCreate) -> EndpointOut:
    await _check_url(body.url)
    secret = new_secret()
    endpoint = WebhookEndpoint(id=uuid7(), tenant_id=principal.tenant_id, url=body.url,
                               description=body.description, event_types=body.event_types, status="enabled",
                               secret_encrypted=secret_box().encrypt(secret))
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint)
    await audit.record(session, principal, "webhook_endpoint.created", ("webhook_endpoint", str(endpoint.id)),
                       {"url": body.url, "event_types": body.event_types}, producer=PRODUCER)
    return to_out(endpoint, secret=secret)


async def update(session: AsyncSession, principal: Principal, endpoint_id: UUID, body: EndpointUpdate) -> EndpointOut:
    endpoint = await _owned(session, principal, endpoint_id)
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    if "url" in changes:
        await _check_url(changes["url"])
    for key, value in changes.items():
        setattr(endpoint, key, value)
    if changes.get("status") == "enabled":
        endpoint.disabled_reason = None
        await _restart_head(session, endpoint.id)
    elif changes.get("status") == "disabled":
        endpoint.disabled_reason = "disabled by the tenant"
    await session.flush()
    await session.refresh(endpoint)
    if changes:
        await audit.record(session, principal, "webhook_endpoint.updated", ("webhook_endpoint", str(endpoint.id)),
                           changes, producer=PRODUCER)
    return to_out(endpoint)


async def _restart_head(session: AsyncSession, endpoint_id: UUID) -> None:
    """On re-enabling, the oldest pending delivery is tried at once with a fresh schedule."""
    head = await repository.head_delivery(session, endpoint_id)
    if head is not None:
        head.attempts = 0
        head.next_attempt_at = datetime.now(UTC)


async def delete(session: AsyncSession, principal: Principal, endpoint_id: UUID) -> None:
    endpoint = await _owned(session, principal, endpoint_id)
    await session.delete(endpoint)
    await audit.record(session, principal, "webhook_endpoint.deleted", ("webhook_endpoint", str(endpoint_id)),
                       {"url": endpoint.url}, producer=PRODUCER)


async def rotate_secret(session: AsyncSession, principal: Principal, endpoint_id: UUID,
                        overlap: timedelta) -> EndpointOut:
    endpoint = await _owned(session, principal, endpoint_id)
    secret = new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = datetime.now(UTC) + overlap
    endpoint.secret_encrypted = secret_box().encrypt(secret)
    await session.flush()
    await session.refresh(endpoint)
    await audit.record(session, principal, "webhook_endpoint.secret_rotated", ("webhook_endpoint", str(endpoint_id)),
                       {"overlap_hours": overlap.total_seconds() / 3600,
                        "previous_secret_expires_at": endpoint.previous_secret_expires_at.isoformat()},
                       producer=PRODUCER)
    return to_out(endpoint, secret=secret)


def _redelivery(endpoint: WebhookEndpoint, event_id: UUID, event_type: str,
                replay_of: UUID | None) -> WebhookDelivery:
    # Queued behind the endpoint's pending deliveries; the same webhook-id lets the partner de-duplicate.
    return WebhookDelivery(id=uuid7(), tenant_id=endpoint.tenant_id, endpoint_id=endpoint.id, event_id=event_id,
                           event_type=event_type, status="pending", attempts=0,
                           next_attempt_at=datetime.now(UTC), replay_of=replay_of)


async def replay_delivery(session: AsyncSession, principal: Principal, endpoint_id: UUID,
                          delivery_id: UUID) -> WebhookDelivery:
    endpoint = await _owned(session, principal, endpoint_id)
    original = await repository.delivery(session, principal.tenant_id, endpoint_id, delivery_id)
    if original is None:
        raise NotFound("webhook delivery")
    replay = _redelivery(endpoint, original.event_id, original.event_type, original.id)
    session.add(replay)
    await session.flush()
    await session.refresh(replay)
    await audit.record(session, principal, "webhook_delivery.replayed", ("webhook_delivery", str(delivery_id)),
                       {"endpoint_id": str(endpoint_id), "replay_id": str(replay.id)}, producer=PRODUCER)
    return replay


async def replay_range(session: AsyncSession, principal: Principal, endpoint_id: UUID, since: datetime,
                       until: datetime | None, only_undelivered: bool) -> int:
    endpoint = await _owned(session, principal, endpoint_id)
    until = until or datetime.now(UTC)
    if until <= since:
        raise Problem(422, "Invalid input", "`until` must be after `since`")
    messages = await repository.messages_between(
        session, principal.tenant_id, since, until, endpoint.event_types,
        undelivered_to=endpoint.id if only_undelivered else None)
    if len(messages) > MAX_REPLAY:
        raise Problem(422, "Invalid input", f"the range holds {len(messages)} events; replay at most {MAX_REPLAY}")
    session.add_all(_redelivery(endpoint, m.event_id, m.event_type, None) for m in messages)
    await session.flush()
    await audit.record(session, principal, "webhook_endpoint.replayed", ("webhook_endpoint", str(endpoint_id)),
                       {"since": since.isoformat(), "until": until.isoformat(), "scheduled": len(messages),
                        "only_undelivered": only_undelivered}, producer=PRODUCER)
    return len(messages)
