"""Inbound PSA callbacks: verified the vendor's way, stored once, answered fast, synced right after.

They sit outside /v1 because the caller is the PSA, not a user with a bearer token: the signature is
the authentication. Anything unverifiable (unknown connection, bad signature) gets 401 and changes
nothing. A verified callback only marks the connection due and wakes the poller; the sync that
follows reads the change through the API, so a forged body could never inject data anyway.
"""
from __future__ import annotations

import uuid

import structlog
from fastapi import APIRouter, Request
from sqlalchemy.dialects.postgresql import insert

from payloop.problems import PROBLEM_JSON, Problem
from payloop.ratelimit import RateLimiter, rate_limited

from payloop_psa_ingest import repository
from payloop_psa_ingest.connectors import open_connector
from payloop_psa_ingest.connectors.base import WebhookRejected
from payloop_psa_ingest.models import DISCONNECTED, WebhookReceipt

log = structlog.get_logger(__name__)

router = APIRouter(tags=["psa webhooks"])

# Checked before any database or signature work, so a flood of forged callbacks costs little.
# A PSA sends a few callbacks per change; a burst of 200 per source absorbs a bulk edit.
_callback_limiter = RateLimiter(rate=20, burst=200)


def _rejected() -> Problem:
    return Problem(401, "Unauthorized", "the callback could not be verified")


@router.post("/webhooks/psa/{connection_id}", summary="PSA callback receiver (verified by the vendor's signature)",
             responses={401: {"description": "Unverifiable callback", "content": {PROBLEM_JSON: {}}},
                        429: {"description": "Too many callbacks from this source", "content": {PROBLEM_JSON: {}}}},
             dependencies=[rate_limited(_callback_limiter)])
async def receive(connection_id: str, request: Request) -> dict:
    body = await request.body()
    try:
        cid = uuid.UUID(connection_id)
    except ValueError:
        raise _rejected() from None
    factory = request.app.state.session_factory
    async with factory() as session:
        connection = await repository.get_connection_any_tenant(session, cid)
    if connection is None or connection.status in ("paused", DISCONNECTED):
        raise _rejected()
    connector = open_connector(connection.source, connection.base_url, connection.credentials_encrypted,
                               connection.settings)
    try:
        notice = await connector.verify_webhook({k.lower(): v for k, v in request.headers.items()}, body)
    except WebhookRejected as exc:
        log.warning("psa.webhook.rejected", connection_id=str(cid), reason=str(exc))
        raise _rejected() from None
    finally:
        await connector.aclose()
    async with factory() as session, session.begin():
        await session.execute(insert(WebhookReceipt).values(
            id=uuid.uuid4(), tenant_id=connection.tenant_id, connection_id=cid, message_id=notice.message_id,
            kind=notice.kind, external_id=notice.external_id).on_conflict_do_nothing(
            index_elements=["connection_id", "message_id"]))
        await repository.request_sync_now(session, connection.tenant_id, cid)
    wake = getattr(request.app.state, "psa_wake", None)
    if wake is not None:
        wake.set()
    return {"received": True}
