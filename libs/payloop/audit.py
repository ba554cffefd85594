"""The audit log of sensitive actions: any service records, the tenants service keeps and serves.

`record(session, principal, action, target, details)` publishes `audit.recorded` through the outbox
in the caller's transaction, so an action and its audit entry commit together or not at all. The
tenants service consumes the topic and serves the entries per tenant (`GET /v1/audit-events`).
Details must never carry secrets: keys that look like one are replaced before the event is written.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from payloop import outbox
from payloop.auth import Principal
from payloop.events.envelope import new_event
from payloop.ids import uuid7

_SECRET_PARTS = ("secret", "password", "token", "authorization", "api_key", "private_key", "credential")
REDACTED = "[redacted]"


def redact(details: Any) -> Any:
    """A copy of `details` with every value under a secret-looking key replaced, at any depth."""
    if isinstance(details, dict):
        return {key: REDACTED if any(part in str(key).lower() for part in _SECRET_PARTS) else redact(value)
                for key, value in details.items()}
    if isinstance(details, list):
        return [redact(item) for item in details]
    return details


async def record(session: AsyncSession, principal: Principal, action: str, target: tuple[str, str],
                 details: dict[str, Any] | None = None, *, producer: str,
                 client_id: str | None = None) -> str:
    """Record that `principal` did `action` on `target` (`(type, id)`); returns the audit id."""
    audit_id = str(uuid7())
    target_type, target_id = target
    await outbox.publish(session, new_event(
        "audit.recorded", tenant_id=principal.tenant_id, client_id=client_id, producer=producer,
        data={
            "audit_id": audit_id,
            "action": action,
            "actor": {"subject": principal.subject, "scopes": sorted(principal.scopes)},
            "target": {"type": target_type, "id": target_id},
            "details": redact(details or {}),
        },
    ))
    return audit_id
