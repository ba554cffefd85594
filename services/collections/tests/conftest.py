"""Fixtures of the collections tests: a movable clock, a real SMTP server on loopback, and a feed of
events applied through the service's own handlers (as the consumer runtime would)."""
from __future__ import annotations

import itertools
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest_asyncio

from payloop.embedded import free_port
from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE
from payloop.simulators.smtp_sink import SmtpSink
from payloop.testing.plugin import running_service

from payloop_collections import scheduler
from payloop_collections.clock import FixedClock
from payloop_collections.mailer import SmtpMailer
from payloop_collections.service import build_service
from payloop_collections.settings import CollectionsSettings
from payloop_collections.wiring import Collections

_ids = itertools.count(1)


@pytest_asyncio.fixture
async def sink():
    smtp = SmtpSink("127.0.0.1", free_port())
    await smtp.start()
    yield smtp
    await smtp.stop()


@dataclass
class Harness:
    """The running service with a clock the test moves, and helpers to feed it events."""

    client: Any
    clock: FixedClock
    settings: CollectionsSettings
    tenant: str
    handlers: dict[str, Any]
    batch_handlers: dict[str, Any]
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def factory(self):
        return self.client.app.state.session_factory

    async def apply(self, type: str, data: dict[str, Any], client_id: str | None = None,
                    tenant: str | None = None, event=None):
        """Apply one event, as of the clock's now, through the service's handler in its own transaction."""
        event = event or new_event(type, tenant_id=tenant or self.tenant, client_id=client_id, data=data,
                                   producer="test", occurred_at=self.clock.now())
        async with self.factory() as session, session.begin():
            await self.handlers[type](session, event, CATALOGUE.parse(type, event.version, event.data))
        return event

    async def apply_batch(self, events: list) -> None:
        """Apply a run of events of one type in one transaction through the service's batch handler."""
        async with self.factory() as session, session.begin():
            await self.batch_handlers[events[0].type](
                session, [(e, CATALOGUE.parse(e.type, e.version, e.data)) for e in events])

    async def tenant_profile(self, timezone: str = "America/New_York", **branding: Any):
        await self.apply("tenant.updated", {"tenant_id": self.tenant, "name": "Acme MSP", "timezone": timezone,
                                            "currency": "USD", "branding": branding})

    async def add_client(self, client_id: str, emails: list[str] | None = None, name: str | None = None):
        await self.apply("client.upserted", {
            "client_id": client_id, "psa": {"source": "connectwise", "external_id": client_id},
            "name": name or f"Client {client_id}", "billing_emails": emails or [f"ap@{client_id}.example"]},
            client_id)

    async def add_invoice(self, client_id: str, due_on: date, total_minor: int, *, issued_on: date | None = None,
                          invoice_id: str | None = None, status: str = "open") -> str:
        invoice_id = invoice_id or f"inv-{next(_ids)}"
        data = {
            "invoice_id": invoice_id, "psa": {"source": "connectwise", "external_id": invoice_id},
            "number": f"N{invoice_id}", "agreement": {"id": "agr-1", "kind": "managed_services",
                                                      "name": "Managed Services Gold"},
            "currency": "USD", "issued_on": (issued_on or due_on - timedelta(days=30)).isoformat(),
            "due_on": due_on.isoformat(), "terms": "Net 30", "status": status, "subtotal_minor": total_minor,
            "tax_minor": 0, "total_minor": total_minor, "balance_minor": total_minor,
            "lines": [{"kind": "per_device", "description": "Workstation management", "quantity": "10",
                       "unit_price_minor": total_minor // 10, "amount_minor": total_minor}],
        }
        self.invoices[invoice_id] = {**data, "client_id": client_id}
        await self.apply("invoice.created", data, client_id)
        return invoice_id

    async def settle(self, client_id: str, invoice_id: str, amount_minor: int, at: datetime | None = None):
        return await self.apply("payment.settled", {
            "payment_id": f"pay-{next(_ids)}", "method": {"type": "card", "brand": "visa", "last4": "4242"},
            "amount_minor": amount_minor, "currency": "USD", "allocations": [
                {"invoice_id": invoice_id, "amount_minor": amount_minor}],
            "processor": {}, "settled_at": (at or self.clock.now()).isoformat()}, client_id)

    async def tick(self) -> None:
        """One pass of the scheduler loop at the clock's current time."""
        await scheduler.tick(self.client.app, Collections(self.clock, self.settings, SmtpMailer(self.settings)))


@asynccontextmanager
async def harness(infra, sink: SmtpSink, start: datetime, *, scheduler: bool = False, consumers: bool = False,
                  relay: bool = False, **settings: Any):
    clock = FixedClock(start.astimezone(UTC))
    config = CollectionsSettings(smtp_port=sink.smtp_port, checkout_base_url="http://pay.test/checkout",
                                 tick_seconds=0.05, **settings)
    service = build_service(clock=clock, settings=config, scheduler=scheduler)
    async with running_service(infra, service, consumers=consumers, relay=relay) as client:
        yield Harness(client=client, clock=clock, settings=config, tenant=f"msp-{next(_ids)}",
                      handlers=service.handlers, batch_handlers=service.batch_handlers)


@pytest_asyncio.fixture
async def make_harness(infra, sink):
    """`async with make_harness(start) as h:` the service at `start`, with the SMTP sink wired in."""
    return lambda start, **kw: harness(infra, sink, start, **kw)
