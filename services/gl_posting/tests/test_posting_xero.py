"""Posting to the Xero simulator through the running gl_posting service.

The same month of activity as the QuickBooks tests; events are applied by calling the service's
handlers (the Kafka path is covered once, in the redelivery test) and the service's own posting loop
talks to the simulator. Every write the simulator received is checked against Xero's OpenAPI schemas.
"""
import json
from decimal import Decimal

from gl_activity import (
    BOOKS_TOTAL_DIFFERS, DAY, INVOICES, all_posted, apply, assert_planted_mismatches, books_total_differs, entries,
    exception_for, invoice_event, month_of_activity, processor_expense, settled, surcharged_activity,
    surcharged_dispute, tenant, wait_for,
)
import pytest
from sqlalchemy import text

from payloop.simulators import xero
from payloop.testing.plugin import running_service
from payloop_gl_posting.service import SERVICE


async def connect(client, xero_sim, headers, organisation: str, *, expect: str = "connected") -> dict:
    code = await xero_sim.consent(organisation)
    answer = await client.put("/v1/gl/connection", headers=headers, json={
        "system": "xero", "company_id": organisation, "authorization_code": code,
        "redirect_uri": "http://127.0.0.1/callback"})
    assert answer.status_code == 202, answer.text

    async def settled_state():
        view = (await client.get("/v1/gl/connection", headers=headers)).json()
        return view if view["status"] != "authorizing" else None
    view = await wait_for(settled_state)
    assert view["status"] == expect, view
    return view


def account_ids(state: dict) -> dict[str, str]:
    return {a["Name"]: a["AccountID"] for a in state["Accounts"]}


async def map_accounts(client, xero_sim, headers, organisation: str) -> dict[str, str]:
    accounts = account_ids(await xero_sim.state(organisation))
    body = {"clearing_account_id": accounts["Stripe Clearing"], "bank_account_id": accounts["Business Bank Account"],
            "fee_account_id": accounts["Merchant Processing Fees"],
            "refunds_account_id": accounts["Refunds and Chargebacks"]}
    answer = await client.put("/v1/gl/account-mapping", headers=headers, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["mapping"]["validated_at"] is not None
    return accounts


async def setup_organisation(xero_sim) -> str:
    organisation = await xero_sim.organisation()
    for _, number, contact, total in INVOICES:
        await xero_sim.invoice(organisation, number, contact, str(Decimal(total) / 100))
    return organisation


def money(value) -> Decimal:
    return Decimal(str(value))


async def test_a_month_of_activity_reconciles_to_the_cent(infra, xero_sim, token):
    t = tenant()
    headers = token(t, "admin")
    organisation = await setup_organisation(xero_sim)
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, xero_sim, headers, organisation)
        await map_accounts(client, xero_sim, headers, organisation)
        events = month_of_activity(t)
        await apply(client, *events)
        posted = await wait_for(lambda: all_posted(client, headers, 14))

        state = await xero_sim.state(organisation)
        assert {i["InvoiceNumber"]: money(i["AmountDue"]) for i in state["Invoices"]} == \
            {number: Decimal("0") for _, number, _, _ in INVOICES}
        assert {i["Status"] for i in state["Invoices"]} == {"PAID"}
        payouts = [e for e in events if e.type == "payout.paid"]
        fees = sum(i["fee_minor"] for e in payouts for i in e.data["items"])
        balances = {name: money(value) for name, value in state["balances"].items()}
        assert balances["Stripe Clearing"] == 0
        assert balances["Business Bank Account"] == Decimal(sum(e.data["amount_minor"] for e in payouts)) / 100
        assert balances["Merchant Processing Fees"] == Decimal(processor_expense(payouts)) / 100
        assert balances["Refunds and Chargebacks"] == Decimal("-650")  # revenue given back: 200.00 + 450.00

        # Each payout is one transfer of exactly its amount out of clearing, with its fees spent beside it.
        transfers = {t["Reference"]: money(t["Amount"]) for t in state["BankTransfers"]}
        by_reference = {e["subject_id"]: e["reference"] for e in posted if e["purpose"] == "deposit"}
        for event in payouts:
            assert transfers[f"{by_reference[event.data['payout_id']]}-transfer"] * 100 == event.data["amount_minor"]
        kinds = sorted((b["Type"], money(b["Total"])) for b in state["BankTransactions"])
        assert ("RECEIVE-OVERPAYMENT", Decimal("50")) in kinds  # p4 paid 50.00 more than invoice 1003
        assert [k for k, _ in kinds].count("SPEND") == 6  # three payouts' fees, a refund, two disputes
        assert [(k, v) for k, v in kinds if k == "RECEIVE"] == [("RECEIVE", Decimal("700"))]  # the won dispute

        # Every write named the organisation, carried its own idempotency key and matched Xero's schemas.
        writes = await xero_sim.requests(organisation)
        assert len(writes) == 18 and not any(w["replayed"] for w in writes)
        assert {w["xero_tenant_id"] for w in writes} == {organisation}
        assert len({w["idempotency_key"] for w in writes}) == 18
        assert {w["idempotency_key"][:36] for w in writes} == {e["id"] for e in posted}  # "<entry id>-<step>"
        validator = xero.spec_validator(xero.find_spec())
        for write in writes:
            assert validator.errors(write["collection"], write["body"]) == [], write

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["balanced"] is True, report["mismatches"]
        assert report["payments"]["posted_count"] == 7 and report["deposits"]["posted_count"] == 3
        assert report["disputes_won"]["posted_amount_minor"] == 70_000
        assert report["fees_minor"] == fees and report["clearing_balance_minor"] == 0
        # Read back from Xero (Bank Summary at the period's end, invoices' AmountDue): all agree to the cent.
        ledger = report["ledger"]
        assert ledger["system"] == "xero" and ledger["as_of"] == report["period_end"]
        assert {a["role"]: (a["ours_minor"], a["theirs_minor"]) for a in ledger["accounts"]} == \
            {"clearing": (0, 0), "bank": (sum(e.data["amount_minor"] for e in payouts),) * 2}
        assert {i["number"]: i["theirs_minor"] for i in ledger["invoices"]} == {n: 0 for _, n, _, _ in INVOICES}
        async with client.app.state.session_factory() as session:
            published = (await session.execute(text("SELECT topic, count(*) FROM outbox GROUP BY topic"))).all()
        # Besides the postings: the audit entries of connecting and of mapping the accounts.
        assert dict(published) == {"gl.posted": 14, "audit.recorded": 2}

        # Someone moves 12.34 from clearing to the bank by a manual journal in Xero, and an invoice there
        # says 90.00 where the PSA says 100.00: the report lists each difference.
        await xero_sim.manual_journal(organisation, [("090", "12.34"), ("091", "-12.34")])
        await xero_sim.invoice(organisation, *BOOKS_TOTAL_DIFFERS)
        await apply(client, *books_total_differs(t))
        await wait_for(lambda: all_posted(client, headers, 15))
        assert_planted_mismatches((await client.get("/v1/gl/reconciliation", headers=headers)).json())


async def test_redelivered_events_and_a_lost_response_post_nothing_twice(infra, xero_sim, token):
    t = tenant()
    headers = token(t, "admin")
    organisation = await setup_organisation(xero_sim)
    async with running_service(infra, SERVICE, consumers=True) as client:
        await connect(client, xero_sim, headers, organisation)
        await map_accounts(client, xero_sim, headers, organisation)
        events = month_of_activity(t)[:9]  # invoices, p1..p3
        # Xero applies the first payment but its answer never arrives (our timeout is shorter).
        await xero_sim.faults(organisation, lose_responses=1, lose_delay_s=3)
        producer = client.app.state.producer
        for event in events + events:  # every event delivered twice through Kafka
            await producer.send_and_wait(event.type, event.to_bytes(), key=event.key.encode())
        posted = await wait_for(lambda: all_posted(client, headers, 3))

        state = await xero_sim.state(organisation)
        assert sorted(p["Reference"] for p in state["Payments"]) == sorted(f"{e['reference']}-payment-1" for e in posted)
        assert money(state["balances"]["Stripe Clearing"]) == Decimal("2200")
        # The timed-out write was looked up by its reference and adopted, not sent again.
        writes = await xero_sim.requests(organisation)
        assert len(writes) == 3 and not any(w["replayed"] for w in writes)
        lost = next(e for e in posted if e["attempts"] > 1)
        assert lost["external_id"] in {p["PaymentID"] for p in state["Payments"]}
        resolved = (await client.get("/v1/gl/exceptions", headers=headers, params={"status": "resolved"})).json()
        assert [e["reason"] for e in resolved["items"]] == ["vendor_error"]


async def test_revoked_token_stops_posting_and_reconnecting_resumes_with_nothing_lost(infra, xero_sim, token):
    t = tenant()
    headers = token(t, "admin")
    organisation = await setup_organisation(xero_sim)
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, xero_sim, headers, organisation)
        await map_accounts(client, xero_sim, headers, organisation)
        events = month_of_activity(t)
        await apply(client, *events[:7])  # invoices and p1
        await wait_for(lambda: all_posted(client, headers, 1))

        await xero_sim.faults(organisation, revoke=True)
        await apply(client, *events[7:9])  # p2, p3 while Xero no longer accepts us
        failure = await wait_for(lambda: exception_for(client, headers, "token_revoked"))
        assert "invalid_grant" in failure["detail"]
        assert (await client.get("/v1/gl/connection", headers=headers)).json()["status"] == "revoked"
        assert [e["state"] for e in await entries(client, headers, purpose="payment")].count("posted") == 1

        await connect(client, xero_sim, headers, organisation)
        await wait_for(lambda: all_posted(client, headers, 3))
        assert len((await xero_sim.state(organisation))["Payments"]) == 3
        assert (await client.get("/v1/gl/exceptions", headers=headers)).json()["items"] == []
        async with client.app.state.session_factory() as session:
            failed = await session.scalar(text("SELECT count(*) FROM outbox WHERE topic = 'gl.post_failed'"))
        assert failed == 1


async def test_exceptions_mapping_and_consent_checks(infra, xero_sim, token):
    t = tenant()
    headers = token(t, "admin")
    organisation, elsewhere = await xero_sim.organisation(), await xero_sim.organisation()
    async with running_service(infra, SERVICE, consumers=False) as client:
        # A consent for one organisation does not connect another.
        code = await xero_sim.consent(elsewhere)
        await client.put("/v1/gl/connection", headers=headers, json={
            "system": "xero", "company_id": organisation, "authorization_code": code,
            "redirect_uri": "http://127.0.0.1/callback"})
        failed = await wait_for(lambda: _status(client, headers, "failed"))
        assert organisation in failed["last_error"]
        await connect(client, xero_sim, headers, organisation)

        # Xero's account types: clearing must be a bank account, fees an expense.
        accounts = account_ids(await xero_sim.state(organisation))
        wrong = {"clearing_account_id": accounts["Accounts Receivable"], "bank_account_id": accounts["Business Bank Account"],
                 "fee_account_id": accounts["Sales"], "refunds_account_id": accounts["Refunds and Chargebacks"]}
        answer = await client.put("/v1/gl/account-mapping", headers=headers, json=wrong)
        assert answer.status_code == 422
        assert {tuple(e["loc"]) for e in answer.json()["errors"]} == {("clearing_account_id",), ("fee_account_id",)}
        await map_accounts(client, xero_sim, headers, organisation)

        # Invoice missing in Xero: recorded, then posted once the invoice exists and we retry.
        await apply(client, invoice_event(t, "inv-9", "2009", 10_000), settled(t, "p9", 10_000, 320, [("inv-9", 10_000)]))
        missing = await wait_for(lambda: exception_for(client, headers, "invoice_not_found"))
        assert missing["retryable"] and "2009" in missing["detail"]
        await xero_sim.invoice(organisation, "2009", "Delta Dental", "100.00")
        retried = await client.post("/v1/gl/retries", headers=headers, json={"entry_ids": [missing["entry_id"]]})
        assert retried.json() == {"requeued": 1}
        await wait_for(lambda: all_posted(client, headers, 1))

        # Locked period: parked until an operator retries after the lock date moves.
        await xero_sim.invoice(organisation, "2010", "Delta Dental", "50.00")
        await xero_sim.faults(organisation, lock_date=DAY.isoformat())
        await apply(client, invoice_event(t, "inv-10", "2010", 5_000), settled(t, "p10", 5_000, 175, [("inv-10", 5_000)]))
        closed = await wait_for(lambda: exception_for(client, headers, "closed_period"))
        assert not closed["retryable"] and "lock date" in closed["detail"]
        assert [e["state"] for e in await entries(client, headers, state="failed")] == ["failed"]
        await xero_sim.faults(organisation, lock_date=None)
        assert (await client.post("/v1/gl/retries", headers=headers, json={})).json() == {"requeued": 1}
        await wait_for(lambda: all_posted(client, headers, 2))

        # Over the minute limit (429): recorded as rate_limited and retried by itself after Retry-After.
        await xero_sim.invoice(organisation, "2011", "Delta Dental", "25.00")
        await xero_sim.faults(organisation, throttle=1, retry_after_s=1)
        await apply(client, invoice_event(t, "inv-11", "2011", 2_500), settled(t, "p11", 2_500, 100, [("inv-11", 2_500)]))
        throttled = await wait_for(lambda: exception_for(client, headers, "rate_limited"))
        assert throttled["retryable"] and "minute" in throttled["detail"]
        await wait_for(lambda: all_posted(client, headers, 3))

        async with client.app.state.session_factory() as session:
            payloads = (await session.execute(text(
                "SELECT payload FROM outbox WHERE topic = 'gl.post_failed' ORDER BY seq"))).scalars().all()
        assert [json.loads(p)["data"]["reason"] for p in payloads] == \
            ["invoice_not_found", "closed_period", "rate_limited"]
        assert len((await xero_sim.state(organisation))["Payments"]) == 3


async def _status(client, headers, status: str):
    view = (await client.get("/v1/gl/connection", headers=headers)).json()
    return view if view["status"] == status else None


async def test_a_convenience_fee_is_received_into_clearing_as_income_once(infra, xero_sim, token):
    t = tenant()
    headers = token(t, "admin")
    organisation = await setup_organisation(xero_sim)
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, xero_sim, headers, organisation)
        accounts = await map_accounts(client, xero_sim, headers, organisation)
        mapping = (await client.get("/v1/gl/account-mapping", headers=headers)).json()["mapping"]
        del mapping["validated_at"]
        wrong = await client.put("/v1/gl/account-mapping", headers=headers,
                                 json={**mapping, "convenience_fee_account_id": accounts["Merchant Processing Fees"]})
        assert [e["loc"] for e in wrong.json()["errors"]] == [["convenience_fee_account_id"]]
        mapped = await client.put("/v1/gl/account-mapping", headers=headers,
                                  json={**mapping, "convenience_fee_account_id": accounts["Card Convenience Fees"]})
        assert mapped.status_code == 200, mapped.text
        events = surcharged_activity(t)
        await apply(client, *events)
        posted = await wait_for(lambda: all_posted(client, headers, 4))
        await apply(client, events[1])  # the settlement told again changes nothing
        assert len(await entries(client, headers)) == 4

        state = await xero_sim.state(organisation)
        balances = {name: money(value) for name, value in state["balances"].items()}
        assert balances["Stripe Clearing"] == 0  # Stripe's 1,030.00 charge, cleared to the cent
        assert balances["Card Convenience Fees"] == Decimal("30")
        assert balances["Business Bank Account"] == Decimal("799.83")  # 1,030.00 - 30.17 fees - 200.00 refunded
        fee = next(e for e in posted if e["purpose"] == "convenience_fee")
        [receipt] = [b for b in state["BankTransactions"] if b["Reference"] == f"{fee['reference']}-convenience-fee"]
        assert (receipt["Type"], money(receipt["Total"]), receipt["BankTransactionID"]) == \
            ("RECEIVE", Decimal("30"), fee["external_id"])
        assert receipt["Contact"]["Name"] == "Acme Dental"  # who paid the invoice paid the fee
        writes = await xero_sim.requests(organisation)
        assert len({w["idempotency_key"] for w in writes}) == len(writes) == 5  # payment, fee, refund, transfer, fees
        validator = xero.spec_validator(xero.find_spec())
        for write in writes:
            assert validator.errors(write["collection"], write["body"]) == [], write

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["balanced"] is True, report["mismatches"]
        assert report["convenience_fees"]["posted_amount_minor"] == 3_000
        assert {a["role"]: (a["ours_minor"], a["theirs_minor"]) for a in report["ledger"]["accounts"]} == \
            {"clearing": (0, 0), "bank": (79_983, 79_983)}


@pytest.mark.parametrize("status", ["lost", "won"])
async def test_a_dispute_spends_its_share_of_the_convenience_fee_from_the_fee_income(infra, xero_sim, token, status):
    """A dispute that took the fee with the payment is a SPEND of two lines (refunds, the fee's income), its
    return a RECEIVE of the same two; with no income account mapped the dispute waits, like the fee."""
    t = tenant()
    headers = token(t, "admin")
    organisation = await setup_organisation(xero_sim)
    count = 8 if status == "won" else 6  # two payments, the fee, deposits, the dispute (and its return)
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, xero_sim, headers, organisation)
        accounts = await map_accounts(client, xero_sim, headers, organisation)  # no convenience fee account yet
        events = surcharged_dispute(t, status)
        await apply(client, *events)

        async def the_fee_and_its_dispute_parked():
            items = await entries(client, headers)
            waiting = sorted(e["purpose"] for e in items if e["state"] == "failed")
            return len(items) == count and waiting == ["convenience_fee", "dispute"] + \
                (["dispute_won"] if status == "won" else []) and \
                all(e["state"] in ("failed", "posted") for e in items)
        await wait_for(the_fee_and_its_dispute_parked)
        mapping = (await client.get("/v1/gl/account-mapping", headers=headers)).json()["mapping"]
        del mapping["validated_at"]
        mapped = await client.put("/v1/gl/account-mapping", headers=headers,
                                  json={**mapping, "convenience_fee_account_id": accounts["Card Convenience Fees"]})
        assert mapped.status_code == 200, mapped.text
        posted = await wait_for(lambda: all_posted(client, headers, count))
        await apply(client, events[4], events[5])  # the dispute told again changes nothing
        assert len(await entries(client, headers)) == count

        state = await xero_sim.state(organisation)
        balances = {name: money(value) for name, value in state["balances"].items()}
        assert balances["Stripe Clearing"] == 0  # Stripe's withdrawal of 1,030.00 cleared to the cent
        assert balances["Card Convenience Fees"] == (Decimal("30") if status == "won" else 0)
        assert balances["Business Bank Account"] == (Decimal("2149.73") if status == "won" else Decimal("1119.73"))
        for dispute in (e for e in posted if e["purpose"].startswith("dispute")):
            [record] = [b for b in state["BankTransactions"] if b["BankTransactionID"] == dispute["external_id"]]
            assert record["Type"] == ("SPEND" if dispute["purpose"] == "dispute" else "RECEIVE")
            assert sorted((line["AccountCode"], money(line["LineAmount"])) for line in record["LineItems"]) == \
                sorted([(code(state, "Refunds and Chargebacks"), Decimal("1000")),
                        (code(state, "Card Convenience Fees"), Decimal("30"))])
        writes = await xero_sim.requests(organisation)
        assert len({w["idempotency_key"] for w in writes}) == len(writes) == (10 if status == "won" else 8)
        validator = xero.spec_validator(xero.find_spec())
        for write in writes:
            assert validator.errors(write["collection"], write["body"]) == [], write

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["clearing_balance_minor"] == 0
        assert {a["role"]: (a["ours_minor"], a["theirs_minor"]) for a in report["ledger"]["accounts"]}["clearing"] \
            == (0, 0)


def code(state: dict, name: str) -> str:
    return next(a["Code"] for a in state["Accounts"] if a["Name"] == name)
