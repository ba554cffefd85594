"""Posting to the QuickBooks Online simulator through the running gl_posting service.

Events are applied by calling the service's handlers with a session of the running app (the Kafka
path is covered once, in the redelivery test); the service's own posting loop talks to the simulator.
"""
import asyncio
import uuid
from datetime import date
from decimal import Decimal

from sqlalchemy import text

from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE
from payloop.testing.plugin import running_service
from payloop_gl_posting.handlers import HANDLERS
from payloop_gl_posting.service import SERVICE

DAY = date.today()


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until `predicate()` is truthy; the timeout only bounds a broken run, nothing asserts on time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def tenant() -> str:
    return f"msp-{uuid.uuid4().hex[:8]}"


def invoice_event(t: str, invoice_id: str, number: str, total: int, client: str = "c1"):
    return new_event("invoice.created", tenant_id=t, client_id=client, producer="psa_ingest", data={
        "invoice_id": invoice_id, "psa": {"source": "connectwise", "external_id": invoice_id}, "number": number,
        "agreement": None, "currency": "USD", "issued_on": DAY.isoformat(), "due_on": DAY.isoformat(),
        "terms": "Net 30", "status": "open", "subtotal_minor": total, "tax_minor": 0, "total_minor": total,
        "balance_minor": total, "lines": []})


def payment_data(payment_id: str, amount: int, fee: int, allocations: list[tuple[str, int]]) -> dict:
    return {"payment_id": payment_id, "method": {"type": "card", "brand": "visa", "last4": "4242"},
            "amount_minor": amount, "currency": "USD", "fee_minor": fee,
            "allocations": [{"invoice_id": i, "amount_minor": a} for i, a in allocations],
            "processor": {"name": "stripe", "payment_intent_id": f"pi_{payment_id}", "charge_id": f"ch_{payment_id}"}}


def settled(t: str, payment_id: str, amount: int, fee: int, allocations, client: str = "c1"):
    return new_event("payment.settled", tenant_id=t, client_id=client, producer="payments",
                     data=payment_data(payment_id, amount, fee, allocations))


def refunded(t: str, payment_id: str, amount: int, fee: int, allocations, refund: int, client: str = "c1"):
    return new_event("payment.refunded", tenant_id=t, client_id=client, producer="payments",
                     data={**payment_data(payment_id, amount, fee, allocations),
                           "refund_id": f"re_{payment_id}", "refunded_minor": refund})


def disputed(t: str, payment_id: str, amount: int, fee: int, allocations, client: str = "c1"):
    return new_event("payment.disputed", tenant_id=t, client_id=client, producer="payments",
                     data={**payment_data(payment_id, amount, fee, allocations),
                           "dispute_id": f"dp_{payment_id}", "disputed_minor": amount})


def payout(t: str, payout_id: str, items: list[tuple[str, str, int, int]]):
    rows = [{"type": kind, "payment_id": pid, "gross_minor": gross, "fee_minor": fee, "net_minor": gross - fee}
            for kind, pid, gross, fee in items]
    return new_event("payout.paid", tenant_id=t, producer="payments", data={
        "payout_id": payout_id, "arrival_date": DAY.isoformat(), "currency": "USD",
        "amount_minor": sum(r["net_minor"] for r in rows), "items": rows})


async def apply(client, *events) -> None:
    async with client.app.state.session_factory() as session, session.begin():
        for event in events:
            await HANDLERS[event.type](session, event, CATALOGUE.parse(event.type, event.version, event.data))


async def connect(client, qbo, headers, realm: str) -> None:
    code = await qbo.consent(realm)
    answer = await client.put("/v1/gl/connection", headers=headers, json={
        "system": "quickbooks", "company_id": realm, "authorization_code": code,
        "redirect_uri": "http://127.0.0.1/callback"})
    assert answer.status_code == 202, answer.text

    async def connected():
        view = (await client.get("/v1/gl/connection", headers=headers)).json()
        return view if view["status"] == "connected" else None
    await wait_for(connected)


async def map_accounts(client, qbo, headers, realm: str) -> dict:
    state = await qbo.state(realm)
    accounts = {a["Name"]: a["Id"] for a in state["entities"]["Account"]}
    item = state["entities"]["Item"][0]["Id"]
    body = {"clearing_account_id": accounts["Undeposited Funds"], "bank_account_id": accounts["Checking"],
            "fee_account_id": accounts["Merchant Processing Fees"],
            "refunds_account_id": accounts["Refunds and Chargebacks"], "refund_item_id": item}
    answer = await client.put("/v1/gl/account-mapping", headers=headers, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["mapping"]["validated_at"] is not None
    return accounts


async def entries(client, headers, **params) -> list[dict]:
    return (await client.get("/v1/gl/entries", headers=headers, params=params)).json()["items"]


async def all_posted(client, headers, count: int):
    items = await entries(client, headers)
    return items if len(items) == count and all(e["state"] == "posted" for e in items) else None


async def exception_for(client, headers, reason: str):
    items = (await client.get("/v1/gl/exceptions", headers=headers)).json()["items"]
    return next((e for e in items if e["reason"] == reason), None)


def balances(state: dict) -> dict[str, Decimal]:
    return {a["Name"]: Decimal(str(a["CurrentBalance"])) for a in state["entities"]["Account"]}


# (invoice id, number, customer, total in cents)
INVOICES = [("inv-1", "1001", "Acme Dental", 100_000), ("inv-2", "1002", "Acme Dental", 120_000),
            ("inv-3", "1003", "Birch Legal", 30_000), ("inv-4", "1004", "Birch Legal", 80_000),
            ("inv-5", "1005", "Cobalt Clinic", 45_000), ("inv-6", "1006", "Cobalt Clinic", 60_000)]


def month_of_activity(t: str) -> list:
    """Payments (one partial, one overpaying), a partial refund, a dispute and three payouts with fees."""
    p = {
        "p1": settled(t, "p1", 100_000, 2_930, [("inv-1", 100_000)]),
        "p2": settled(t, "p2", 50_000, 1_480, [("inv-2", 50_000)]),
        "p3": settled(t, "p3", 70_000, 560, [("inv-2", 70_000)]),
        "p4": settled(t, "p4", 35_000, 1_045, [("inv-3", 30_000)]),  # 50.00 overpaid -> unapplied credit
        "p5": settled(t, "p5", 80_000, 2_350, [("inv-4", 80_000)]),
        "p6": settled(t, "p6", 45_000, 1_335, [("inv-5", 45_000)]),
        "p7": settled(t, "p7", 60_000, 1_770, [("inv-6", 60_000)]),
    }
    return [*(invoice_event(t, i, n, total) for i, n, _, total in INVOICES), *p.values(),
            payout(t, "po_1", [("charge", "p1", 100_000, 2_930), ("charge", "p2", 50_000, 1_480)]),
            payout(t, "po_2", [("charge", "p3", 70_000, 560), ("charge", "p4", 35_000, 1_045),
                               ("charge", "p5", 80_000, 2_350)]),
            refunded(t, "p5", 80_000, 2_350, [("inv-4", 80_000)], 20_000),
            disputed(t, "p6", 45_000, 1_335, [("inv-5", 45_000)]),
            payout(t, "po_3", [("charge", "p6", 45_000, 1_335), ("charge", "p7", 60_000, 1_770),
                               ("refund", "p5", -20_000, 0), ("dispute", "p6", -45_000, 1_500)])]


async def setup_company(qbo) -> str:
    realm = (await qbo.company())["realm_id"]
    for _, number, customer, total in INVOICES:
        await qbo.invoice(realm, number, customer, str(Decimal(total) / 100))
    return realm


async def test_a_month_of_activity_reconciles_to_the_cent(infra, qbo, token):
    t = tenant()
    headers = token(t, "admin")
    realm = await setup_company(qbo)
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, qbo, headers, realm)
        await map_accounts(client, qbo, headers, realm)
        events = month_of_activity(t)
        await apply(client, *events)
        posted = await wait_for(lambda: all_posted(client, headers, 12))

        state = await qbo.state(realm)
        invoices = {i["DocNumber"]: Decimal(str(i["Balance"])) for i in state["entities"]["Invoice"]}
        assert invoices == {number: Decimal("0") for _, number, _, _ in INVOICES}
        accounts = balances(state)
        payouts = [e for e in events if e.type == "payout.paid"]
        fees = sum(i["fee_minor"] for e in payouts for i in e.data["items"])
        assert accounts["Undeposited Funds"] == 0
        assert accounts["Checking"] == Decimal(sum(e.data["amount_minor"] for e in payouts)) / 100
        assert accounts["Merchant Processing Fees"] == Decimal(fees) / 100
        deposits = {d["DocNumber"]: Decimal(str(d["TotalAmt"])) for d in state["entities"]["Deposit"]}
        by_reference = {e["subject_id"]: e["reference"] for e in posted if e["purpose"] == "deposit"}
        for event in payouts:
            assert deposits[by_reference[event.data["payout_id"]]] * 100 == event.data["amount_minor"]
        overpaid = next(p for p in state["entities"]["Payment"] if Decimal(str(p["TotalAmt"])) == Decimal("350"))
        assert Decimal(str(overpaid["UnappliedAmt"])) == Decimal("50")
        assert len(state["entities"]["RefundReceipt"]) == 2

        # Every write carried our entry id as requestid and the minor version we were written for.
        writes = await qbo.requests(realm)
        assert {w["requestid"] for w in writes} == {e["id"] for e in posted}
        assert {w["minorversion"] for w in writes} == {75}

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["balanced"] is True, report["mismatches"]
        assert report["payments"]["posted_count"] == 7 and report["deposits"]["posted_count"] == 3
        assert report["fees_minor"] == fees and report["clearing_balance_minor"] == 0

        async with client.app.state.session_factory() as session:
            published = (await session.execute(text("SELECT topic, count(*) FROM outbox GROUP BY topic"))).all()
        assert dict(published) == {"gl.posted": 12}


async def test_redelivered_events_and_a_lost_response_post_nothing_twice(infra, qbo, token):
    t = tenant()
    headers = token(t, "admin")
    realm = await setup_company(qbo)
    async with running_service(infra, SERVICE, consumers=True) as client:
        await connect(client, qbo, headers, realm)
        await map_accounts(client, qbo, headers, realm)
        events = month_of_activity(t)[:9]  # invoices, p1..p3
        # QuickBooks applies the first payment but its answer never arrives (our timeout is shorter).
        await qbo.faults(realm, lose_responses=1, lose_delay_s=3)
        producer = client.app.state.producer
        for event in events + events:  # every event delivered twice through Kafka
            await producer.send_and_wait(event.type, event.to_bytes(), key=event.key.encode())
        posted = await wait_for(lambda: all_posted(client, headers, 3))

        state = await qbo.state(realm)
        assert sorted(p["DocNumber"] for p in state["entities"]["Payment"]) == sorted(e["reference"] for e in posted)
        assert balances(state)["Undeposited Funds"] == Decimal("2200")
        # The timed-out write was looked up, found and adopted, not sent again.
        writes = await qbo.requests(realm)
        assert len(writes) == 3
        lost = next(e for e in posted if e["attempts"] > 1)
        assert lost["external_id"] in {p["Id"] for p in state["entities"]["Payment"]}
        resolved = (await client.get("/v1/gl/exceptions", headers=headers, params={"status": "resolved"})).json()
        assert [e["reason"] for e in resolved["items"]] == ["vendor_error"]


async def test_revoked_token_stops_posting_and_reconnecting_resumes_with_nothing_lost(infra, qbo, token):
    t = tenant()
    headers = token(t, "admin")
    realm = await setup_company(qbo)
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, qbo, headers, realm)
        await map_accounts(client, qbo, headers, realm)
        events = month_of_activity(t)
        await apply(client, *events[:7])  # invoices and p1
        await wait_for(lambda: all_posted(client, headers, 1))

        await qbo.faults(realm, revoke=True)
        await apply(client, *events[7:9])  # p2, p3 while QuickBooks no longer accepts us
        failure = await wait_for(lambda: exception_for(client, headers, "token_revoked"))
        assert "invalid_grant" in failure["detail"]
        assert (await client.get("/v1/gl/connection", headers=headers)).json()["status"] == "revoked"
        pending = await entries(client, headers, purpose="payment")
        assert [e["state"] for e in pending].count("posted") == 1

        await connect(client, qbo, headers, realm)
        await wait_for(lambda: all_posted(client, headers, 3))
        state = await qbo.state(realm)
        assert len(state["entities"]["Payment"]) == 3
        assert (await client.get("/v1/gl/exceptions", headers=headers)).json()["items"] == []
        async with client.app.state.session_factory() as session:
            failed = await session.scalar(text("SELECT count(*) FROM outbox WHERE topic = 'gl.post_failed'"))
        assert failed == 1


async def test_exceptions_are_recorded_visible_and_retried_through_the_api(infra, qbo, token):
    t = tenant()
    headers = token(t, "admin")
    realm = (await qbo.company())["realm_id"]
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, qbo, headers, realm)
        await map_accounts(client, qbo, headers, realm)

        # Invoice missing in QuickBooks: recorded, then posted once the invoice exists and we retry.
        await apply(client, invoice_event(t, "inv-9", "2009", 10_000), settled(t, "p9", 10_000, 320, [("inv-9", 10_000)]))
        missing = await wait_for(lambda: exception_for(client, headers, "invoice_not_found"))
        assert missing["retryable"] and "2009" in missing["detail"]
        await qbo.invoice(realm, "2009", "Delta Dental", "100.00")
        retried = await client.post("/v1/gl/retries", headers=headers, json={"entry_ids": [missing["entry_id"]]})
        assert retried.json() == {"requeued": 1}
        await wait_for(lambda: all_posted(client, headers, 1))

        # Closed books: parked until an operator retries after reopening the period.
        await qbo.invoice(realm, "2010", "Delta Dental", "50.00")
        await qbo.faults(realm, closing_date=DAY.isoformat())
        await apply(client, invoice_event(t, "inv-10", "2010", 5_000), settled(t, "p10", 5_000, 175, [("inv-10", 5_000)]))
        closed = await wait_for(lambda: exception_for(client, headers, "closed_period"))
        assert not closed["retryable"]
        assert [e["state"] for e in await entries(client, headers, state="failed")] == ["failed"]
        await qbo.faults(realm, closing_date=None)
        assert (await client.post("/v1/gl/retries", headers=headers, json={})).json() == {"requeued": 1}
        await wait_for(lambda: all_posted(client, headers, 2))

        # Throttled (429): recorded as rate_limited and retried.
        await qbo.invoice(realm, "2011", "Delta Dental", "25.00")
        await qbo.faults(realm, throttle=1)
        await apply(client, invoice_event(t, "inv-11", "2011", 2_500), settled(t, "p11", 2_500, 100, [("inv-11", 2_500)]))
        throttled = await wait_for(lambda: exception_for(client, headers, "rate_limited"))
        assert throttled["retryable"]
        await client.post("/v1/gl/retries", headers=headers, json={})
        await wait_for(lambda: all_posted(client, headers, 3))

        async with client.app.state.session_factory() as session:
            reasons = (await session.execute(text(
                "SELECT payload FROM outbox WHERE topic = 'gl.post_failed' ORDER BY seq"))).scalars().all()
        import json
        assert [json.loads(p)["data"]["reason"] for p in reasons] == ["invoice_not_found", "closed_period", "rate_limited"]
        assert len((await qbo.state(realm))["entities"]["Payment"]) == 3


async def test_account_mapping_is_checked_against_the_chart_of_accounts(infra, qbo, token):
    t = tenant()
    headers = token(t, "admin")
    realm = (await qbo.company())["realm_id"]
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, qbo, headers, realm)
        accounts = await map_accounts(client, qbo, headers, realm)
        wrong = {"clearing_account_id": accounts["Undeposited Funds"], "bank_account_id": accounts["Checking"],
                 "fee_account_id": accounts["Sales of Product Income"], "refunds_account_id": "999"}
        answer = await client.put("/v1/gl/account-mapping", headers=headers, json=wrong)
        assert answer.status_code == 422
        assert {tuple(e["loc"]) for e in answer.json()["errors"]} == {("fee_account_id",), ("refunds_account_id",)}
        kept = (await client.get("/v1/gl/account-mapping", headers=headers)).json()
        assert kept["mapping"]["fee_account_id"] == accounts["Merchant Processing Fees"]
        # Another tenant sees none of it.
        other = token(tenant(), "admin")
        assert (await client.get("/v1/gl/account-mapping", headers=other)).json() == {"configured": False, "mapping": None}
        assert (await client.get("/v1/gl/connection", headers=other)).json()["status"] == "not_connected"
