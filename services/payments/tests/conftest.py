"""Fixtures of the payments tests (test modules cannot import each other, so helpers come as the `kit`
fixture): the plugin's localstripe behind the project's Stripe sandbox (ACH, card declines,
payouts), the service on a fresh database, events applied through the service's own handlers, and
what the outbox holds."""
from __future__ import annotations


import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import time
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
import uvicorn
from sqlalchemy import text

from payloop.embedded import free_port
from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE
from payloop.simulators.stripe_sandbox import StripeSandbox
from payloop.testing.plugin import running_service

from payloop_payments.handlers import HANDLERS
from payloop_payments.service import SERVICE
from payloop_payments.settings import payments_settings


@pytest_asyncio.fixture(scope="session")
async def stripe_sandbox(localstripe):
    sandbox = await StripeSandbox(localstripe).start()
    yield sandbox
    await sandbox.stop()


@pytest.fixture(scope="session")
def stripe_env(stripe_sandbox):
    saved = {k: os.environ.get(k) for k in ("PAYLOOP_STRIPE_API_BASE", "PAYLOOP_PAYMENTS_RUN_SCHEDULER")}
    os.environ["PAYLOOP_STRIPE_API_BASE"] = stripe_sandbox.url
    # Tests drive the scheduler with their own clock.
    os.environ["PAYLOOP_PAYMENTS_RUN_SCHEDULER"] = "false"
    payments_settings.cache_clear()
    yield stripe_sandbox.url
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    payments_settings.cache_clear()


@pytest_asyncio.fixture
async def payments(infra, stripe_env):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        yield client


@pytest_asyncio.fixture
async def stripe_webhooks(payments, stripe_sandbox):
    """The service's app also served over HTTP, and registered as the sandbox's webhook endpoint, so
    Stripe's events reach /webhooks/stripe signed as Stripe signs them. Yields the sandbox."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(payments.app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    async with httpx.AsyncClient(base_url=stripe_sandbox.url) as http:
        # One endpoint id for every test: each registration replaces the previous test's.
        answer = await http.post("/_config/webhooks/payments-test", data={
            "url": f"http://127.0.0.1:{port}/webhooks/stripe", "secret": payments_settings().webhook_secret()})
        assert answer.status_code == 200, answer.text
    yield stripe_sandbox
    await stripe_sandbox.delivered()
    server.should_exit = True
    await task


async def deliver(client, type: str, tenant: str, data: dict, *, client_id: str | None = None,
                  occurred_at: datetime | None = None):
    """Apply an event through the service's handler, in one transaction, as the consumer would."""
    event = new_event(type, tenant_id=tenant, client_id=client_id, producer="test", data=data,
                      occurred_at=occurred_at)
    async with client.app.state.session_factory() as session, session.begin():
        await HANDLERS[type](session, event, CATALOGUE.parse(type, event.version, event.data))
    return event


async def seed_tenant(client, tenant: str, *, branding: dict | None = None, **settings):
    await deliver(client, "tenant.updated", tenant, {"tenant_id": tenant, "name": f"{tenant} MSP",
                                                     "timezone": "America/New_York", "currency": "USD",
                                                     "branding": branding or {"primary_color": "#123456"},
                                                     "settings": settings})


async def seed_client(client, tenant: str, client_id: str):
    await deliver(client, "client.upserted", tenant, {
        "client_id": client_id, "psa": {"source": "connectwise", "external_id": client_id},
        "name": f"Client {client_id}", "billing_emails": [f"ap@{client_id}.example"]}, client_id=client_id)


def invoice_data(invoice_id: str, total: int, *, due: date, issued: date | None = None, balance: int | None = None,
                 kinds: tuple[str, ...] = ("recurring",), status: str = "open") -> dict:
    return {
        "invoice_id": invoice_id, "psa": {"source": "connectwise", "external_id": invoice_id},
        "number": invoice_id.upper(), "agreement": {"id": "agr-1", "kind": "managed_services", "name": "MSP Gold"},
        "currency": "USD", "issued_on": (issued or due - timedelta(days=30)).isoformat(), "due_on": due.isoformat(),
        "terms": "Net 30", "status": status, "subtotal_minor": total, "tax_minor": 0, "total_minor": total,
        "balance_minor": total if balance is None else balance,
        "lines": [{"kind": kind, "description": f"{kind} services", "quantity": "1", "unit_price_minor": total // len(kinds),
                   "amount_minor": total // len(kinds)} for kind in kinds],
    }


async def seed_invoice(client, tenant: str, client_id: str, invoice_id: str, total: int, *, due: date, **kw):
    await deliver(client, "invoice.created", tenant, invoice_data(invoice_id, total, due=due, **kw),
                  client_id=client_id)


async def outbox_events(client, topic: str, tenant: str | None = None) -> list[dict]:
    async with client.app.state.session_factory() as session:
        rows = (await session.execute(text("SELECT payload FROM outbox WHERE topic = :t ORDER BY seq"),
                                      {"t": topic})).scalars().all()
    events = [json.loads(bytes(r)) for r in rows]
    return [e for e in events if tenant is None or e["tenant_id"] == tenant]


async def save_card(client, headers, client_id: str, card: str = "pm_card_visa") -> dict:
    """What the browser does with Stripe.js (confirm the SetupIntent), then register the method."""
    from payloop_payments.api import gateway_of

    setup = await client.post(f"/v1/clients/{client_id}/setup-intents", json={"type": "card"}, headers=headers)
    assert setup.status_code == 201, setup.text
    await gateway_of(client.app).confirm_setup_intent(setup.json()["setup_intent_id"], card, None)
    saved = await client.post(f"/v1/clients/{client_id}/payment-methods",
                              json={"setup_intent_id": setup.json()["setup_intent_id"]}, headers=headers)
    assert saved.status_code == 201, saved.text
    return saved.json()


async def save_bank_account(client, headers, client_id: str, account: str = "000123456789") -> dict:
    """What Stripe.js does for a manually entered bank account (confirm with a mandate, verify the
    microdeposits at the sandbox), then register the method."""
    setup = await client.post(f"/v1/clients/{client_id}/setup-intents", json={"type": "ach"}, headers=headers)
    assert setup.status_code == 201, setup.text
    intent_id = setup.json()["setup_intent_id"]
    async with httpx.AsyncClient(base_url=payments_settings().stripe_api_base,
                                 headers={"Authorization": "Bearer sk_test_payloop_tests"}) as stripe:
        confirmed = await stripe.post(f"/v1/setup_intents/{intent_id}/confirm", data={
            "payment_method_data[type]": "us_bank_account",
            "payment_method_data[us_bank_account][routing_number]": "110000000",
            "payment_method_data[us_bank_account][account_number]": account,
            "payment_method_data[us_bank_account][account_holder_type]": "company",
            "payment_method_data[billing_details][name]": f"Client {client_id}",
            "mandate_data[customer_acceptance][type]": "offline"})
        assert confirmed.json()["next_action"]["type"] == "verify_with_microdeposits", confirmed.text
        early = await client.post(f"/v1/clients/{client_id}/payment-methods", json={"setup_intent_id": intent_id},
                                  headers=headers)
        assert early.status_code == 422, early.text  # not usable before the account is verified
        verified = await stripe.post(f"/v1/setup_intents/{intent_id}/verify_microdeposits",
                                     data={"amounts[]": ["32", "45"]})
        assert verified.json()["status"] == "succeeded", verified.text
    saved = await client.post(f"/v1/clients/{client_id}/payment-methods", json={"setup_intent_id": intent_id},
                              headers=headers)
    assert saved.status_code == 201, saved.text
    return saved.json()


def signed(event: dict, *, secret: str | None = None, at: int | None = None) -> tuple[bytes, dict]:
    """A Stripe webhook delivery of `event`: body and a `Stripe-Signature` header as Stripe signs them."""
    body = json.dumps(event).encode()
    stamp = at if at is not None else int(time.time())
    key = (secret or payments_settings().webhook_secret()).encode()
    signature = hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={stamp},v1={signature}", "Content-Type": "application/json"}


def utc(y, m, d, h=15) -> datetime:
    return datetime(y, m, d, h, tzinfo=UTC)


@contextlib.asynccontextmanager
async def running_scheduler(client, monkeypatch, interval_s: float):
    """The service's own scheduler loop, as it runs in production, with this interval between quiet passes."""
    from payloop_payments import scheduler

    with monkeypatch.context() as env:
        env.setenv("PAYLOOP_PAYMENTS_RUN_SCHEDULER", "true")
        env.setenv("PAYLOOP_PAYMENTS_SCHEDULER_INTERVAL_S", str(interval_s))
        payments_settings.cache_clear()
        stop = asyncio.Event()
        loop = asyncio.create_task(scheduler.scheduler_loop(client.app, stop))
        try:
            yield
        finally:
            stop.set()
            await loop
    payments_settings.cache_clear()


async def settled_events(client, tenant: str, *, tries: int = 200) -> list[dict]:
    """The tenant's `payment.settled` events once there is one (polled; empty if none came)."""
    for _ in range(tries):
        if found := await outbox_events(client, "payment.settled", tenant):
            return found
        await asyncio.sleep(0.05)
    return []



@pytest.fixture
def kit():
    from types import SimpleNamespace

    return SimpleNamespace(deliver=deliver, seed_tenant=seed_tenant, seed_client=seed_client,
                           seed_invoice=seed_invoice, invoice_data=invoice_data, outbox_events=outbox_events,
                           save_card=save_card, save_bank_account=save_bank_account, utc=utc, signed=signed,
                           running_scheduler=running_scheduler, settled_events=settled_events)
