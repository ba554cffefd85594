"""The scheduler presenting charges concurrently, against the Stripe sandbox: every due invoice is charged
exactly once even by two schedulers at once, and Stripe's 429 means later, never a failed payment."""
import asyncio
from datetime import date, timedelta

from sqlalchemy import func, select

from payloop.simulators.stripe_sandbox import RateLimit

from payloop_payments import scheduler
from payloop_payments.models import Payment, PaymentAllocation, PaymentAttempt
from payloop_payments.settings import payments_settings
from payloop_payments.stripe_gateway import StripeGateway


class CountingLimit(RateLimit):
    """The sandbox's limit, counting what it refused."""

    refused = taken = 0

    def take(self) -> bool:
        allowed = super().take()
        self.refused += not allowed
        self.taken += allowed
        return allowed


class RefusingFirst(CountingLimit):
    """The sandbox's limit refusing the first `refuse` requests whatever the time (a bucket refilled by
    the clock would let a slow machine's first request through)."""

    def __init__(self, rate: float, *, refuse: int):
        super().__init__(rate)
        self.to_refuse = refuse

    def take(self) -> bool:
        if self.to_refuse:
            self.to_refuse -= 1
            self.refused += 1
            return False
        return super().take()


async def count(client, model, **where):
    async with client.app.state.session_factory() as session:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return await session.scalar(query)


async def enrolled_client(payments, headers, kit, tenant: str, client_id: str, card: str = "pm_card_visa"):
    await kit.seed_client(payments, tenant, client_id)
    method = await kit.save_card(payments, headers, client_id, card=card)
    answer = await payments.put(f"/v1/clients/{client_id}/autopay", headers=headers,
                                json={"payment_method_id": method["id"], "rule": "on_due"})
    assert answer.status_code == 200, answer.text


async def test_two_concurrent_schedulers_charge_every_due_invoice_and_retry_exactly_once(
        payments, token, kit):
    tenant, headers = "t-many", token("t-many", "admin")
    await kit.seed_tenant(payments, tenant)
    due = date(2026, 6, 1)
    invoices = []
    for c in range(3):
        await enrolled_client(payments, headers, kit, tenant, f"c{c}")
        for n in range(5):  # several invoices of one client: its row lock serialises their reservations
            invoices.append(f"c{c}-i{n}")
            await kit.seed_invoice(payments, tenant, f"c{c}", invoices[-1], 1_000 + 100 * n, due=due)
    await enrolled_client(payments, headers, kit, tenant, "dud", card="pm_card_chargeCustomerFail")
    await kit.seed_invoice(payments, tenant, "dud", "dud-1", 4_200, due=due)
    factory, gateway = payments.app.state.session_factory, payments.app.state.gateway

    def two_schedulers(now):
        return asyncio.gather(scheduler.run_once(factory, gateway, now=now, concurrency=4),
                              scheduler.run_once(factory, gateway, now=now, concurrency=4))

    first_day = kit.utc(2026, 6, 1)
    assert sum(await two_schedulers(first_day)) == len(invoices) + 1
    assert await count(payments, Payment, tenant_id=tenant) == len(invoices) + 1
    assert await count(payments, PaymentAttempt, tenant_id=tenant) == len(invoices) + 1
    async with factory() as session:
        charged = (await session.scalars(select(PaymentAllocation.invoice_id)
                                         .where(PaymentAllocation.tenant_id == tenant))).all()
    assert sorted(charged) == sorted(invoices + ["dud-1"])
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert sorted(a["invoice_id"] for e in settled for a in e["data"]["allocations"]) == sorted(invoices)
    failed = await kit.outbox_events(payments, "payment.failed", tenant)
    assert [e["data"]["retryable"] for e in failed] == [True]

    # The declined card's retry is due the next day: both schedulers, four workers each, make one attempt.
    assert sum(await two_schedulers(first_day + timedelta(days=1))) == 1
    assert await count(payments, PaymentAttempt, tenant_id=tenant) == len(invoices) + 2
    failed = await kit.outbox_events(payments, "payment.failed", tenant)
    assert [e["data"]["attempt"] for e in failed] == [1, 2]
    assert sum(await two_schedulers(first_day + timedelta(days=1, hours=1))) == 0
    balances = {i["invoice_id"]: i["open_minor"]
                for c in ("c0", "c1", "c2")
                for i in (await payments.get(f"/v1/clients/{c}/invoices", headers=headers)).json()}
    assert balances == dict.fromkeys(invoices, 0)


async def charge_one_due_invoice(payments, token, kit, stripe_sandbox, tenant: str, limit: RateLimit) -> list[str]:
    """One enrolled client's invoice charged by one scheduler pass with `limit` at the sandbox; returns
    the invoices its `payment.settled` paid."""
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant)
    await enrolled_client(payments, headers, kit, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "a-1", 10_000, due=date(2026, 6, 1))
    stripe_sandbox.limit = limit
    try:
        assert await scheduler.run_once(payments.app.state.session_factory, payments.app.state.gateway,
                                        now=kit.utc(2026, 6, 1)) == 1
    finally:
        stripe_sandbox.limit = None
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    return [a["invoice_id"] for e in settled for a in e["data"]["allocations"]]


async def test_a_charge_is_one_stripe_request_its_fee_expanded_in_the_answer(payments, token, kit, stripe_sandbox):
    limit = CountingLimit(1_000)
    assert await charge_one_due_invoice(payments, token, kit, stripe_sandbox, "t-one-request", limit) == ["a-1"]
    # The PaymentIntent with its charge's balance transaction expanded: no request for the charge or the fee.
    # (Without the expansion the gateway asks for the charge and its balance transaction: three requests.)
    assert (limit.taken, limit.refused) == (1, 0)


async def test_a_429_is_retried_with_backoff_within_the_charge(payments, token, kit, stripe_sandbox):
    limit = RefusingFirst(1_000, refuse=2)  # the charge's request is refused twice, then answered
    assert await charge_one_due_invoice(payments, token, kit, stripe_sandbox, "t-429", limit) == ["a-1"]
    assert (limit.refused, limit.taken) == (2, 1)
    assert await kit.outbox_events(payments, "payment.failed", "t-429") == []


async def test_a_429_that_persists_leaves_the_charge_to_be_presented_later_not_failed(
        payments, token, kit, stripe_sandbox):
    tenant, headers = "t-429-later", token("t-429-later", "admin")
    await kit.seed_tenant(payments, tenant)
    await enrolled_client(payments, headers, kit, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "a-1", 7_700, due=date(2026, 6, 1))
    factory = payments.app.state.session_factory
    # One quick retry, then the call counts as unanswered.
    gateway = StripeGateway(payments_settings().model_copy(update={"stripe_rate_limit_retries": 1}))
    limit = CountingLimit(0.5)  # never a whole token: every request is refused
    stripe_sandbox.limit = limit
    day = kit.utc(2026, 6, 1)
    try:
        assert await scheduler.run_once(factory, gateway, now=day) == 1
    finally:
        stripe_sandbox.limit = None
    assert limit.refused == 2
    async with factory() as session:
        payment = await session.scalar(select(Payment).where(Payment.tenant_id == tenant))
        attempts = (await session.scalars(
            select(PaymentAttempt.status).where(PaymentAttempt.tenant_id == tenant))).all()
    assert (payment.status, payment.next_attempt_at, attempts) == ("pending", None, ["created"])
    assert await kit.outbox_events(payments, "payment.failed", tenant) == []
    invoices = (await payments.get("/v1/clients/acme/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 0  # held as pending, so nobody charges it a second time meanwhile

    # Stripe takes requests again: a later pass presents the same attempt (same Idempotency-Key).
    later = day + scheduler.STALE_ATTEMPT + timedelta(seconds=1)
    assert await scheduler.run_once(factory, gateway, now=later) == 0
    await gateway.close()
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert [(e["data"]["attempt"], [a["invoice_id"] for a in e["data"]["allocations"]]) for e in settled] == [
        (1, ["a-1"])]
    assert await count(payments, PaymentAttempt, tenant_id=tenant) == 1
    assert await kit.outbox_events(payments, "payment.failed", tenant) == []
