"""A flood of deliveries to /webhooks/stripe from one address is refused with 429 and Retry-After
before any signature or database work; a refused delivery changes nothing, and other sources go on."""
import time

import httpx
import pytest
from sqlalchemy import func, select

from payloop_payments.models import StripeEvent
from payloop_payments.settings import payments_settings


@pytest.fixture
def small_flood_guard(monkeypatch, stripe_env):
    monkeypatch.setenv("PAYLOOP_STRIPE_WEBHOOK_RATE_PER_S", "0.01")
    monkeypatch.setenv("PAYLOOP_STRIPE_WEBHOOK_BURST", "3")
    payments_settings.cache_clear()
    yield
    monkeypatch.undo()
    payments_settings.cache_clear()


async def stored_events(client) -> int:
    async with client.app.state.session_factory() as session:
        return await session.scalar(select(func.count()).select_from(StripeEvent))


async def test_a_flood_from_one_address_gets_429_and_changes_nothing(small_flood_guard, payments, kit):
    event = {"id": "evt_flood_1", "type": "customer.created", "created": int(time.time()),
             "data": {"object": {"id": "cus_1", "object": "customer"}}}
    for _ in range(3):  # the burst: forged deliveries still cost a token each
        forged = await payments.post("/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"})
        assert forged.status_code == 401

    body, headers = kit.signed(event)
    refused = await payments.post("/webhooks/stripe", content=body, headers=headers)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert await stored_events(payments) == 0

    # Another source has its own bucket: Stripe's genuine delivery from elsewhere is taken.
    transport = httpx.ASGITransport(app=payments.app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://payments") as stripe:
        accepted = await stripe.post("/webhooks/stripe", content=body, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert await stored_events(payments) == 1
