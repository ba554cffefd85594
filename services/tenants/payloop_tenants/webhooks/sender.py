"""The delivery loop: POST each endpoint's deliveries in order, retrying on the schedule.

Per endpoint, only the oldest pending delivery may be sent (head of line), so a partner receives an
endpoint's events in the order we accepted them, and a failing endpoint does not delay the others.
The sender locks the endpoint row (`FOR UPDATE SKIP LOCKED`) for each attempt, so any number of
tenants processes can run this loop and one endpoint still sees one request at a time. The outcome
of each attempt commits before the next is sent: a crash repeats at most the one request in flight,
and the receiver de-duplicates it by `webhook-id`.
"""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop import outbox
from payloop.events import new_event

from payloop_tenants.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage
from payloop_tenants.webhooks import repository
from payloop_tenants.webhooks.destinations import UnsafeDestination, check_destination
from payloop_tenants.webhooks.schedule import RETRY_SCHEDULE, delay_after
from payloop_tenants.webhooks.service import PRODUCER, active_secrets
from payloop_tenants.webhooks.signing import signature_header

log = structlog.get_logger(__name__)

USER_AGENT = "Payloop-Webhooks/1"
EXCERPT_CHARS = 500


@dataclass
class WebhookSender:
    schedule: tuple[timedelta, ...] = RETRY_SCHEDULE
    poll_interval_s: float = 1.0
    request_timeout_s: float = 10.0
    concurrency: int = 8
    endpoints_per_round: int = 200

    async def run(self, app: FastAPI, stop: asyncio.Event) -> None:
        """Background loop of the tenants service (`ServiceDefinition.background`)."""
        factory = app.state.session_factory
        async with httpx.AsyncClient(timeout=self.request_timeout_s, follow_redirects=False) as http:
            while not stop.is_set():
                try:
                    sent = await self.deliver_due(factory, http, stop)
                except Exception as exc:  # the database may be briefly away; try again next round
                    log.error("webhooks.sender.round_failed", error=repr(exc))
                    sent = 0
                if not sent:
                    try:
                        await asyncio.wait_for(stop.wait(), self.poll_interval_s)
                    except asyncio.TimeoutError:
                        pass

    async def deliver_due(self, factory: async_sessionmaker[AsyncSession], http: httpx.AsyncClient,
                          stop: asyncio.Event) -> int:
        async with factory() as session:
            endpoint_ids = await repository.due_endpoint_ids(session, datetime.now(UTC), self.endpoints_per_round)
        if not endpoint_ids:
            return 0
        slots = asyncio.Semaphore(self.concurrency)

        async def drain(endpoint_id: UUID) -> int:
            async with slots:
                return await self._drain_endpoint(factory, http, endpoint_id, stop)

        return sum(await asyncio.gather(*(drain(e) for e in endpoint_ids)))

    async def _drain_endpoint(self, factory: async_sessionmaker[AsyncSession], http: httpx.AsyncClient,
                              endpoint_id: UUID, stop: asyncio.Event) -> int:
        sent = 0
        while not stop.is_set():
            async with factory() as session, session.begin():
                endpoint = await repository.lock_enabled_endpoint(session, endpoint_id)
                if endpoint is None:
                    return sent
                head = await repository.head_delivery(session, endpoint_id)
                if head is None or head.next_attempt_at > datetime.now(UTC):
                    return sent
                message = await repository.message(session, head.event_id)
                delivered = await self._attempt(session, http, endpoint, head, message)
                sent += 1
            if not delivered:
                return sent
        return sent

    async def _attempt(self, session: AsyncSession, http: httpx.AsyncClient, endpoint: WebhookEndpoint,
                       delivery: WebhookDelivery, message: WebhookMessage) -> bool:
        body = json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False).encode()
        message_id = str(message.event_id)
        timestamp = int(time.time())
        started_at = datetime.now(UTC)
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   "webhook-id": message_id, "webhook-timestamp": str(timestamp)}
        signed = {**headers, "webhook-signature": signature_header(
            active_secrets(endpoint, started_at), message_id, timestamp, body)}
        status: int | None = None
        excerpt: str | None = None
        error: str | None = None
        clock = time.perf_counter()
        try:
            await check_destination(endpoint.url)
            response = await http.post(endpoint.url, content=body, headers=signed)
            status, excerpt = response.status_code, response.text[:EXCERPT_CHARS]
        except UnsafeDestination as exc:
            error = f"not sent: {exc}"[:EXCERPT_CHARS]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS]
        duration_ms = round((time.perf_counter() - clock) * 1000)
        # The log keeps what was sent and what came back, but not the signature.
        session.add(WebhookAttempt(tenant_id=delivery.tenant_id, delivery_id=delivery.id, attempted_at=started_at,
                                   request_url=endpoint.url, request_headers=headers, request_bytes=len(body),
                                   response_status=status, response_excerpt=excerpt, error=error,
                                   duration_ms=duration_ms))
        delivery.attempts += 1
        if status is not None and 200 <= status < 300:
            delivery.status, delivery.finished_at = "succeeded", datetime.now(UTC)
            return True
        log.info("webhooks.delivery.failed", tenant_id=delivery.tenant_id, endpoint_id=str(endpoint.id),
                 delivery_id=str(delivery.id), attempt=delivery.attempts, status=status, error=error)
        if status == 410:
            # Gone: the partner says the endpoint no longer exists; retrying for days would only knock on it.
            await self._give_up(session, endpoint, delivery,
                                f"the endpoint answered 410 Gone to delivery {delivery.id}; re-enable to resume")
            return False
        delay = delay_after(delivery.attempts, self.schedule)
        if delay is not None:
            delivery.next_attempt_at = datetime.now(UTC) + delay
        else:
            await self._give_up(session, endpoint, delivery,
                                f"delivery {delivery.id} failed {delivery.attempts} times over "
                                f"{sum(self.schedule, timedelta())}; re-enable to resume")
        return False

    async def _give_up(self, session: AsyncSession, endpoint: WebhookEndpoint, delivery: WebhookDelivery,
                       reason: str) -> None:
        now = datetime.now(UTC)
        delivery.status, delivery.finished_at = "failed", now
        endpoint.status, endpoint.disabled_reason = "disabled", reason
        await session.flush()
        await outbox.publish(session, new_event(
            "webhook_endpoint.disabled", tenant_id=endpoint.tenant_id, producer=PRODUCER,
            data={"endpoint_id": str(endpoint.id), "url": endpoint.url, "reason": endpoint.disabled_reason,
                  "failed_delivery_id": str(delivery.id), "disabled_at": now.isoformat()},
        ))
        log.warning("webhooks.endpoint.disabled", tenant_id=endpoint.tenant_id, endpoint_id=str(endpoint.id),
                    delivery_id=str(delivery.id))
