"""ACH and hard card declines end to end against the Stripe sandbox: the scheduler charges through the
API, the outcome arrives as signed Stripe webhooks when the sandbox clock moves, and the retry rules
(Nacha re-presentment, unusable accounts, revoked authorizations, card hard declines) follow."""
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from payloop_payments import scheduler
from payloop_payments.models import Payment, PaymentMethod, StripeEvent


async def run(client, now):
    return await scheduler.run_once(client.app.state.session_factory, client.app.state.gateway, now=now)


async def payment_of(client, tenant: str) -> Payment:
    async with client.app.state.session_factory() as session:
        return (await session.scalars(select(Payment).where(Payment.tenant_id == tenant))).one()


async def stripe_id_of(client, method_id: str) -> str:
    async with client.app.state.session_factory() as session:
        return (await session.get(PaymentMethod, uuid.UUID(method_id))).stripe_payment_method_id


async def stripe_events_of(client, intent_id: str) -> list[StripeEvent]:
    async with client.app.state.session_factory() as session:
        rows = (await session.scalars(select(StripeEvent))).all()
    return [r for r in rows if r.payload["data"]["object"].get("id") == intent_id
            or r.payload["data"]["object"].get("payment_intent") == intent_id]


async def open_minor(client, headers, client_id: str) -> int:
    return sum(i["open_minor"] for i in (await client.get(f"/v1/clients/{client_id}/invoices", headers=headers)).json())


async def autopay_client(payments, token, kit, *, account: str | None = None, card: str | None = None,
                         amount: int = 12_000):
    """A tenant with one client on auto-pay (charged on the due date) and one invoice due today."""
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant)
    await kit.seed_client(payments, tenant, "acme")
    if account:
        method = await kit.save_bank_account(payments, headers, "acme", account)
    else:
        method = await kit.save_card(payments, headers, "acme", card=card)
    enrolled = await payments.put("/v1/clients/acme/autopay", headers=headers,
                                  json={"payment_method_id": method["id"], "rule": "on_due"})
    assert enrolled.status_code == 200, enrolled.text
    today = datetime.now(ZoneInfo("America/New_York")).date()
    await kit.seed_invoice(payments, tenant, "acme", "inv-1", amount, due=today)
    return tenant, headers, method


async def test_ach_debit_processes_then_settles_and_a_late_return_reopens_the_balance(
        payments, stripe_webhooks, token, kit):
    tenant, headers, method = await autopay_client(payments, token, kit, account="000123456789")
    assert (method["type"], method["brand"], method["last4"]) == ("ach", "STRIPE TEST BANK", "6789")
    assert await run(payments, datetime.now(UTC)) == 1
    await stripe_webhooks.delivered()
    payment = await payment_of(payments, tenant)
    assert payment.status == "processing"
    assert len(await kit.outbox_events(payments, "payment.initiated", tenant)) == 1
    # Processing is not a failure: nothing is dunned, the invoice is held as pending.
    assert await kit.outbox_events(payments, "payment.failed", tenant) == []
    assert await kit.outbox_events(payments, "payment.settled", tenant) == []
    assert await open_minor(payments, headers, "acme") == 0

    advanced = await stripe_webhooks.advance(days=4)
    assert [e["type"] for e in advanced["events"]] == ["charge.succeeded", "payment_intent.succeeded"]
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert len(settled) == 1
    assert settled[0]["data"]["fee_minor"] == 96  # Stripe's ACH price: 0.8% of 120.00
    assert settled[0]["data"]["method"] == {"type": "ach", "brand": "STRIPE TEST BANK", "last4": "6789"}
    assert (await payment_of(payments, tenant)).status == "succeeded"

    # Two days later the bank returns the debit (R01).
    charge_id = (await payment_of(payments, tenant)).stripe_charge_id
    async with httpx.AsyncClient(base_url=stripe_webhooks.url) as sandbox:
        returned = await sandbox.post(f"/_sim/charges/{charge_id}/return", json={"failure_code": "insufficient_funds"})
        assert returned.status_code == 200, returned.text
    failed = await kit.outbox_events(payments, "payment.failed", tenant)
    assert len(failed) == 1
    assert failed[0]["data"]["late_return"] is True and failed[0]["data"]["decline_code"] == "insufficient_funds"
    assert failed[0]["data"]["retryable"] is True
    reversed_ = await kit.outbox_events(payments, "payment.disputed", tenant)
    assert [(e["data"]["status"], e["data"]["disputed_minor"]) for e in reversed_] == [("returned", 12_000)]
    assert await open_minor(payments, headers, "acme") == 12_000
    # Both of Stripe's events for the return arrived; the second changed nothing.
    intent_id = (await payment_of(payments, tenant)).stripe_payment_intent_id
    kinds = sorted(e.type for e in await stripe_events_of(payments, intent_id))
    assert kinds.count("charge.failed") == 1 and kinds.count("payment_intent.payment_failed") == 1

    # The re-presentment goes out on schedule and settles.
    retry_at = datetime.fromisoformat(failed[0]["data"]["next_attempt_at"])
    assert await run(payments, retry_at) == 1
    await stripe_webhooks.advance(days=4)
    assert len(await kit.outbox_events(payments, "payment.settled", tenant)) == 2
    assert await open_minor(payments, headers, "acme") == 0


async def test_ach_insufficient_funds_is_represented_at_most_twice(payments, stripe_webhooks, token, kit):
    tenant, headers, _ = await autopay_client(payments, token, kit, account="000222222227")
    now = datetime.now(UTC)
    assert await run(payments, now) == 1
    for _ in range(5):
        await stripe_webhooks.advance(days=4)
        failed = await kit.outbox_events(payments, "payment.failed", tenant)
        if not failed[-1]["data"]["retryable"]:
            break
        assert await run(payments, datetime.fromisoformat(failed[-1]["data"]["next_attempt_at"])) == 1
    failed = await kit.outbox_events(payments, "payment.failed", tenant)
    assert [e["data"]["attempt"] for e in failed] == [1, 2, 3]  # the entry and two re-presentments
    assert all(e["data"]["decline_code"] == "insufficient_funds" for e in failed)
    assert failed[-1]["data"]["retryable"] is False and "twice" in failed[-1]["data"]["reason"]
    assert await run(payments, now + timedelta(days=179)) == 0
    assert await open_minor(payments, headers, "acme") == 12_000
    assert await kit.outbox_events(payments, "payment.disputed", tenant) == []  # never settled, nothing reversed


@pytest.mark.parametrize("account, code, method_status, enrolled", [
    ("000111111113", "account_closed", "unusable", True),        # R02: the account is unusable
    ("000333333335", "debit_not_authorized", "revoked", False),  # R10: auto-pay authorization revoked
])
async def test_ach_returns_that_are_never_retried(payments, stripe_webhooks, token, kit, account, code,
                                                  method_status, enrolled):
    tenant, headers, method = await autopay_client(payments, token, kit, account=account)
    now = datetime.now(UTC)
    assert await run(payments, now) == 1
    await stripe_webhooks.advance(days=4)
    failed = await kit.outbox_events(payments, "payment.failed", tenant)
    assert [(e["data"]["decline_code"], e["data"]["retryable"]) for e in failed] == [(code, False)]
    updates = await kit.outbox_events(payments, "payment_method.updated", tenant)
    assert updates[-1]["data"]["status"] == method_status  # the client is asked for another account
    methods = (await payments.get("/v1/clients/acme/payment-methods", headers=headers)).json()
    assert methods[0]["status"] == method_status
    autopay = (await payments.get("/v1/clients/acme/autopay", headers=headers)).json()
    assert autopay["active"] is enrolled
    # Neither the scheduler nor a person can charge that method again.
    assert await run(payments, now + timedelta(days=30)) == 0
    again = await payments.post("/v1/payments", headers=headers,
                                json={"client_id": "acme", "payment_method_id": method["id"]})
    assert again.status_code == 409, again.text


async def test_stolen_card_is_declined_flagged_and_never_retried(payments, stripe_webhooks, token, kit):
    tenant, headers, method = await autopay_client(payments, token, kit,
                                                   card="pm_card_visa_chargeCustomerFailStolenCard")
    now = datetime.now(UTC)
    assert await run(payments, now) == 1
    await stripe_webhooks.delivered()
    failed = await kit.outbox_events(payments, "payment.failed", tenant)
    assert [(e["data"]["decline_code"], e["data"]["retryable"]) for e in failed] == [("stolen_card", False)]
    assert (await kit.outbox_events(payments, "payment_method.updated", tenant))[-1]["data"]["status"] == "unusable"
    # Stripe's own events for the decline came in over the webhook and found it already recorded.
    intent_id = (await payment_of(payments, tenant)).stripe_payment_intent_id
    assert sorted(e.type for e in await stripe_events_of(payments, intent_id)) == \
        ["charge.failed", "payment_intent.payment_failed"]
    assert await run(payments, now + timedelta(days=7)) == 0
    assert len(await kit.outbox_events(payments, "payment.failed", tenant)) == 1


async def test_card_insufficient_funds_is_retried_on_schedule_and_then_settles(payments, stripe_webhooks, token, kit):
    tenant, headers, method = await autopay_client(payments, token, kit, card="pm_card_visa")
    card = await stripe_id_of(payments, method["id"])
    async with httpx.AsyncClient(base_url=stripe_webhooks.url) as sandbox:
        assert (await sandbox.post(f"/_sim/payment_methods/{card}/decline",
                                   json={"decline_code": "insufficient_funds"})).status_code == 200
        now = datetime.now(UTC)
        assert await run(payments, now) == 1
        failed = await kit.outbox_events(payments, "payment.failed", tenant)
        assert [(e["data"]["decline_code"], e["data"]["retryable"]) for e in failed] == [("insufficient_funds", True)]
        retry_at = datetime.fromisoformat(failed[0]["data"]["next_attempt_at"])
        assert timedelta(hours=23) < retry_at - now <= timedelta(days=1)  # day 1 of the default schedule
        assert await run(payments, retry_at - timedelta(minutes=1)) == 0
        # The client's account is topped up before the retry.
        cleared = await sandbox.post(f"/_sim/payment_methods/{card}/decline", json={"decline_code": None})
        assert cleared.status_code == 200
    assert await run(payments, retry_at) == 1
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert len(settled) == 1 and settled[0]["data"]["attempt"] == 2
    methods = (await payments.get("/v1/clients/acme/payment-methods", headers=headers)).json()
    assert methods[0]["status"] == "active"
