"""Auto-pay on a test clock against localstripe, retries of a declined card, two schedulers,
and Stripe webhooks: forged ones refused, real ones applied once (disputes reopen invoices)."""
import asyncio
import hashlib
import hmac
import json
import time
from datetime import date, timedelta

from sqlalchemy import func, select

from payloop_payments import scheduler
from payloop_payments.models import Payment, PaymentAttempt, StripeEvent
from payloop_payments.settings import payments_settings


async def run(client, now):
    return await scheduler.run_once(client.app.state.session_factory, client.app.state.gateway, now=now)


async def count(client, model, **where):
    async with client.app.state.session_factory() as session:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return await session.scalar(query)


async def test_autopay_charges_on_the_rules_day_exactly_once_even_with_two_schedulers(payments, token, kit):
    headers = token("t-auto", "admin")
    await kit.seed_tenant(payments, "t-auto")
    await kit.seed_client(payments, "t-auto", "acme")
    method = await kit.save_card(payments, headers, "acme")
    enrolled = await payments.put("/v1/clients/acme/autopay", headers=headers, json={
        "payment_method_id": method["id"], "rule": "days_before_due", "days_before_due": 3,
        "excluded_kinds": ["product"]})
    assert enrolled.status_code == 200, enrolled.text
    assert [e["data"]["enrolled"] for e in await kit.outbox_events(payments, "autopay.changed", "t-auto")] == [True]
    await kit.seed_invoice(payments, "t-auto", "acme", "a-1", 12_000, due=date(2026, 4, 10))
    await kit.seed_invoice(payments, "t-auto", "acme", "a-hw", 90_000, due=date(2026, 4, 10), kinds=("product",))
    # A redelivered invoice.created changes nothing.
    await kit.seed_invoice(payments, "t-auto", "acme", "a-1", 12_000, due=date(2026, 4, 10))

    assert await run(payments, kit.utc(2026, 4, 6)) == 0  # four days before due: not yet
    # Two schedulers on the rule's day (2026-04-07 in New York): one charge.
    results = await asyncio.gather(run(payments, kit.utc(2026, 4, 7)), run(payments, kit.utc(2026, 4, 7)))
    assert sum(results) == 1
    assert await run(payments, kit.utc(2026, 4, 8)) == 0
    assert await count(payments, PaymentAttempt, tenant_id="t-auto") == 1
    settled = await kit.outbox_events(payments, "payment.settled", "t-auto")
    assert len(settled) == 1
    assert settled[0]["data"]["allocations"] == [{"invoice_id": "a-1", "amount_minor": 12_000}]
    # The excluded kind (hardware) is never charged automatically.
    invoices = {i["invoice_id"]: i["open_minor"]
                for i in (await payments.get("/v1/clients/acme/invoices", headers=headers)).json()}
    assert invoices == {"a-1": 0, "a-hw": 90_000}


async def test_declined_card_is_retried_on_schedule(payments, token, kit):
    headers = token("t-decl", "admin")
    await kit.seed_tenant(payments, "t-decl")
    await kit.seed_client(payments, "t-decl", "dud")
    method = await kit.save_card(payments, headers, "dud", card="pm_card_chargeCustomerFail")
    await payments.put("/v1/clients/dud/autopay", headers=headers,
                       json={"payment_method_id": method["id"], "rule": "on_due"})
    await kit.seed_invoice(payments, "t-decl", "dud", "d-1", 4_200, due=date(2026, 5, 1))
    first_day = kit.utc(2026, 5, 1)
    assert await run(payments, first_day) == 1
    failed = await kit.outbox_events(payments, "payment.failed", "t-decl")
    assert len(failed) == 1 and failed[0]["data"]["retryable"] is True
    assert failed[0]["data"]["next_attempt_at"].startswith("2026-05-02")
    assert await run(payments, first_day + timedelta(hours=12)) == 0  # not due yet
    assert await run(payments, first_day + timedelta(days=1)) == 1   # day 1 retry
    assert await run(payments, first_day + timedelta(days=1, hours=1)) == 0
    failed = await kit.outbox_events(payments, "payment.failed", "t-decl")
    assert [e["data"]["attempt"] for e in failed] == [1, 2]
    assert failed[1]["data"]["next_attempt_at"].startswith("2026-05-04")  # day 3 of the schedule
    invoices = (await payments.get("/v1/clients/dud/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 4_200  # nothing is held as pending after a decline


def signed(event: dict, *, secret: str | None = None, at: int | None = None) -> tuple[bytes, dict]:
    body = json.dumps(event).encode()
    stamp = at if at is not None else int(time.time())
    key = (secret or payments_settings().webhook_secret()).encode()
    signature = hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={stamp},v1={signature}", "Content-Type": "application/json"}


async def test_webhooks_are_verified_stored_once_and_disputes_reopen_invoices(payments, token, kit):
    headers = token("t-hook", "admin")
    await kit.seed_tenant(payments, "t-hook")
    await kit.seed_client(payments, "t-hook", "ivy")
    await kit.seed_invoice(payments, "t-hook", "ivy", "h-1", 7_000, due=date(2026, 6, 1))
    method = await kit.save_card(payments, headers, "ivy")
    paid = (await payments.post("/v1/payments", headers=headers,
                                json={"client_id": "ivy", "payment_method_id": method["id"]})).json()
    async with payments.app.state.session_factory() as session:
        charge_id = (await session.get(Payment, __import__("uuid").UUID(paid["id"]))).stripe_charge_id
    dispute = {"id": "evt_dispute_1", "type": "charge.dispute.created", "created": int(time.time()),
               "data": {"object": {"id": "dp_1", "object": "dispute", "charge": charge_id, "amount": 7_000,
                                   "currency": "usd", "reason": "fraudulent", "status": "needs_response"}}}

    for forged in (signed(dispute, secret="whsec_someone_else"),
                   signed(dispute, at=int(time.time()) - 3600),  # replay outside the tolerance
                   (json.dumps(dispute).encode(), {"Content-Type": "application/json"})):
        response = await payments.post("/webhooks/stripe", content=forged[0], headers=forged[1])
        assert response.status_code == 401
    assert await count(payments, StripeEvent) == 0
    assert await kit.outbox_events(payments, "payment.disputed", "t-hook") == []

    body, sig = signed(dispute)
    assert (await payments.post("/webhooks/stripe", content=body, headers=sig)).json()["duplicate"] is False
    body, sig = signed(dispute)  # Stripe redelivers the same event id
    assert (await payments.post("/webhooks/stripe", content=body, headers=sig)).json()["duplicate"] is True
    disputed = await kit.outbox_events(payments, "payment.disputed", "t-hook")
    assert len(disputed) == 1 and disputed[0]["data"]["disputed_minor"] == 7_000
    invoices = (await payments.get("/v1/clients/ivy/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 7_000

    won = {**dispute, "id": "evt_dispute_2", "type": "charge.dispute.closed",
           "data": {"object": {**dispute["data"]["object"], "status": "won"}}}
    body, sig = signed(won)
    assert (await payments.post("/webhooks/stripe", content=body, headers=sig)).status_code == 200
    invoices = (await payments.get("/v1/clients/ivy/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 0
    payment = (await payments.get(f"/v1/payments/{paid['id']}", headers=headers)).json()
    assert payment["status"] == "succeeded" and payment["disputed_minor"] == 0
