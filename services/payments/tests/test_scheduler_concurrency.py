"""The scheduler presenting charges concurrently, against the Stripe sandbox: every due invoice is charged
exactly once even by two schedulers at once, and Stripe's 429 means later, never a failed payment. A
pass's first charges are reserved in one transaction and their answers recorded in groups: a conflict, a
refused request, a crash or an answer that cannot be recorded costs no charge twice and holds back no other."""
import asyncio
import json
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, text

from payloop.ids import uuid7
from payloop.simulators.stripe_sandbox import RateLimit

from payloop_payments import charging, scheduler
from payloop_payments.charging import PaymentRequest
from payloop_payments.models import Client, Invoice, Payment, PaymentAllocation, PaymentAttempt, PaymentMethod
from payloop_payments.settings import payments_settings
from payloop_payments.stripe_gateway import ChargeResult, StripeGateway


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


async def enrolled_with_invoices(payments, token, kit, tenant: str, amounts: dict[str, int]) -> None:
    """One enrolled client, "acme", with these invoices due on 2026-06-01 (the oldest first, in order)."""
    await kit.seed_tenant(payments, tenant)
    await enrolled_client(payments, token(tenant, "admin"), kit, tenant, "acme")
    for n, (invoice_id, amount) in enumerate(amounts.items()):
        await kit.seed_invoice(payments, tenant, "acme", invoice_id, amount, due=date(2026, 5, 25 + n))


async def until_a_session_waits_on_a_lock(factory) -> None:
    for _ in range(200):
        async with factory() as session:
            if await session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                         "AND datname = current_database()")):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("nobody waited on a lock")


async def reserved_on(factory, day) -> list[charging.Reserved]:
    """The first charges due on `day`, reserved together as a scheduler pass reserves them."""
    async with factory() as session:
        due = await scheduler.due_first_charges(session, day)
    reserved, _ = await charging.reserve_many(factory, due, now=day)
    return reserved


async def attempts_by_key(factory, tenant: str) -> dict[str, list[PaymentAttempt]]:
    async with factory() as session:
        rows = (await session.execute(select(Payment.idempotency_key, PaymentAttempt).join(
            PaymentAttempt, PaymentAttempt.payment_id == Payment.id).where(Payment.tenant_id == tenant))).all()
    found: dict[str, list[PaymentAttempt]] = {}
    for key, attempt in rows:
        found.setdefault(key, []).append(attempt)
    return found


async def test_a_batch_whose_reservation_conflicts_is_made_one_charge_at_a_time(payments, token, kit):
    tenant = "t-batch-conflict"
    await enrolled_with_invoices(payments, token, kit, tenant, {"a-1": 1_100, "a-2": 1_200, "a-3": 1_300})
    factory, gateway = payments.app.state.session_factory, payments.app.state.gateway
    async with factory() as other:
        # A payment for a-2 under the scheduler's key, written by someone who took no client lock and has
        # not committed yet: the batch does not see it, and its insert waits on it.
        method_id = await other.scalar(select(PaymentMethod.id).where(PaymentMethod.tenant_id == tenant))
        other.add(Payment(tenant_id=tenant, client_id="acme", idempotency_key="autopay:a-2", origin="autopay",
                          payment_method_id=method_id, amount_minor=1_200, currency="USD", status="pending",
                          attempt_count=0))
        await other.flush()
        scheduled = asyncio.create_task(scheduler.run_once(factory, gateway, now=kit.utc(2026, 6, 1)))
        await until_a_session_waits_on_a_lock(factory)
        await other.commit()
    # The batch failed on the key as a whole; each charge was then made alone, and a-2 was left to its payment.
    assert await scheduled == 2
    attempts = await attempts_by_key(factory, tenant)
    assert {key: [a.status for a in made] for key, made in attempts.items()} == {
        "autopay:a-1": ["succeeded"], "autopay:a-3": ["succeeded"]}
    assert await count(payments, Payment, tenant_id=tenant) == 3
    initiated = await kit.outbox_events(payments, "payment.initiated", tenant)
    assert sorted(a["invoice_id"] for e in initiated for a in e["data"]["allocations"]) == ["a-1", "a-3"]
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert sorted(a["invoice_id"] for e in settled for a in e["data"]["allocations"]) == ["a-1", "a-3"]
    async with factory() as session:
        held = (await session.execute(select(Invoice.invoice_id, Invoice.pending_minor, Invoice.collected_minor)
                                      .where(Invoice.tenant_id == tenant).order_by(Invoice.invoice_id))).all()
    assert [tuple(row) for row in held] == [("a-1", 0, 1_100), ("a-2", 0, 0), ("a-3", 0, 1_300)]


async def test_a_request_refused_in_a_batch_changes_nothing_and_the_others_are_reserved(payments, token, kit):
    tenant = "t-batch-refused"
    await enrolled_with_invoices(payments, token, kit, tenant, {"usd-1": 2_000, "usd-2": 3_000})
    eur = kit.invoice_data("eur-1", 4_000, due=date(2026, 5, 30))
    await kit.deliver(payments, "invoice.created", tenant, {**eur, "currency": "EUR"}, client_id="acme")
    await kit.deliver(payments, "credit_memo.created", tenant, {
        "credit_memo_id": "cm-1", "psa": {"source": "connectwise", "external_id": "cm-1"}, "number": "CM-1",
        "currency": "USD", "issued_on": "2026-05-20", "total_minor": 500, "applied_to": []}, client_id="acme")
    factory = payments.app.state.session_factory
    async with factory() as session:
        method_id = await session.scalar(select(PaymentMethod.id).where(PaymentMethod.tenant_id == tenant))

    def request(key: str, invoice_ids: list[str]) -> PaymentRequest:
        return PaymentRequest(tenant_id=tenant, client_id="acme", payment_method_id=method_id, idempotency_key=key,
                              origin="autopay", client_initiated=False, invoice_ids=invoice_ids, use_credit=True)

    # The first applies the client's credit to usd-1, then is refused: one payment cannot mix currencies.
    reserved, alone = await charging.reserve_many(
        factory, [request("mixed", ["usd-1", "eur-1"]), request("autopay:usd-2", ["usd-2"])], now=kit.utc(2026, 6, 1))
    assert alone == []
    [made] = reserved
    assert (made.idempotency_key, made.rows.payment.amount_minor) == ("autopay:usd-2", 2_500)
    async with factory() as session:
        credit = await session.scalar(select(Client.credit_minor).where(Client.tenant_id == tenant))
        held = (await session.execute(select(Invoice.invoice_id, Invoice.credited_minor, Invoice.pending_minor)
                                      .where(Invoice.tenant_id == tenant).order_by(Invoice.invoice_id))).all()
    # The credit went to the request that was made, none of it to the one refused.
    assert credit == 0
    assert [tuple(row) for row in held] == [("eur-1", 0, 0), ("usd-1", 0, 0), ("usd-2", 500, 2_500)]
    assert [e["data"]["payment_id"] for e in await kit.outbox_events(payments, "payment.initiated", tenant)] == [
        str(made.rows.payment.id)]


async def test_reserved_charges_a_crash_left_are_presented_again_with_their_keys(payments, token, kit, stripe_sandbox):
    tenant = "t-batch-crash"
    await enrolled_with_invoices(payments, token, kit, tenant, {"c-1": 4_100, "c-2": 4_200})
    factory, gateway = payments.app.state.session_factory, payments.app.state.gateway
    day = kit.utc(2026, 6, 1)
    reserved = await reserved_on(factory, day)
    by_key = {r.idempotency_key: r for r in reserved}
    answered = []

    async def crash(answer: charging.Answer) -> None:
        answered.append(answer)
        raise ConnectionError("the process died before recording Stripe's answer")

    # c-1 reached Stripe, whose answer was lost; c-2 was never presented.
    with pytest.raises(ConnectionError):
        await charging.present_reserved(gateway, by_key["autopay:c-1"], record=crash)
    assert await scheduler.run_once(factory, gateway, now=day + timedelta(minutes=1)) == 0  # not stale yet
    assert await scheduler.run_once(factory, gateway, now=day + scheduler.STALE_ATTEMPT + timedelta(seconds=1)) == 0

    attempts = await attempts_by_key(factory, tenant)
    assert {key: [(a.id, a.status) for a in made] for key, made in attempts.items()} == {
        key: [(r.rows.attempt.id, "succeeded")] for key, r in by_key.items()}
    for r in by_key.values():
        # Stripe saw each attempt under its key, and the payment holds the one PaymentIntent it made for it.
        _, _, body = stripe_sandbox.idempotent[f"payloop-attempt-{r.rows.attempt.id}"]
        async with factory() as session:
            intent = await session.scalar(select(Payment.stripe_payment_intent_id).where(
                Payment.id == r.rows.payment.id))
        assert intent == json.loads(body)["id"]
    [first] = answered
    assert [a.stripe_payment_intent_id for a in attempts["autopay:c-1"]] == [first.result.payment_intent_id]
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert sorted(a["invoice_id"] for e in settled for a in e["data"]["allocations"]) == ["c-1", "c-2"]


async def test_an_answer_that_cannot_be_recorded_leaves_the_others_of_its_group_recorded(payments, token, kit):
    tenant = "t-group-error"
    await enrolled_with_invoices(payments, token, kit, tenant, {"g-1": 5_100, "g-2": 5_200})
    factory, gateway = payments.app.state.session_factory, payments.app.state.gateway
    day = kit.utc(2026, 6, 1)
    reserved = await reserved_on(factory, day)
    answers: list[charging.Answer] = []

    async def keep(answer: charging.Answer) -> None:
        answers.append(answer)
    for item in reserved:
        await charging.present_reserved(gateway, item, record=keep)
    groups = scheduler.OutcomeGroups(factory, now=day, size=16)
    # One group: an answer about an attempt there is not (it fails the group's transaction), then the two.
    for answer in [charging.Answer(tenant, uuid7(), ChargeResult("succeeded", "pi_nowhere")), *answers]:
        await groups.record(answer)
    await groups.written()
    attempts = await attempts_by_key(factory, tenant)
    assert {key: [a.status for a in made] for key, made in attempts.items()} == {
        "autopay:g-1": ["succeeded"], "autopay:g-2": ["succeeded"]}
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert sorted(a["invoice_id"] for e in settled for a in e["data"]["allocations"]) == ["g-1", "g-2"]


class StoppingAtFirst(CountingLimit):
    """The sandbox's limit, setting the service's stop event when the first request reaches it."""

    def __init__(self, rate: float, stop: asyncio.Event):
        super().__init__(rate)
        self.stop = stop

    def take(self) -> bool:
        self.stop.set()
        return super().take()


async def test_a_pass_sends_nothing_more_to_stripe_once_the_service_stops(
        payments, token, kit, stripe_sandbox):
    tenant = "t-stop"
    await enrolled_with_invoices(payments, token, kit, tenant, {"s-1": 6_100, "s-2": 6_200, "s-3": 6_300})
    factory, gateway = payments.app.state.session_factory, payments.app.state.gateway
    day, stop = kit.utc(2026, 6, 1), asyncio.Event()
    # The service stops while the pass's first charge is at Stripe: its answer is recorded, and the
    # others (reserved with it) are not sent to a gateway about to be closed.
    stripe_sandbox.limit = limit = StoppingAtFirst(1_000, stop)
    try:
        await scheduler.run_once(factory, gateway, now=day, concurrency=1, stop=stop)
    finally:
        stripe_sandbox.limit = None
    assert limit.taken == 1
    attempts = await attempts_by_key(factory, tenant)
    assert sorted(a.status for made in attempts.values() for a in made) == ["created", "created", "succeeded"]

    # Left `created`, they are presented by a later pass with their keys, once each.
    await scheduler.run_once(factory, gateway, now=day + scheduler.STALE_ATTEMPT + timedelta(seconds=1))
    attempts = await attempts_by_key(factory, tenant)
    assert {key: [a.status for a in made] for key, made in attempts.items()} == {
        "autopay:s-1": ["succeeded"], "autopay:s-2": ["succeeded"], "autopay:s-3": ["succeeded"]}
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert sorted(a["invoice_id"] for e in settled for a in e["data"]["allocations"]) == ["s-1", "s-2", "s-3"]
