"""Posting to the QuickBooks Online simulator through the running gl_posting service.

Events are applied by calling the service's handlers with a session of the running app (the Kafka
path is covered once, in the redelivery test); the service's own posting loop talks to the simulator.
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

from payloop.testing.plugin import running_service
from payloop_gl_posting.service import SERVICE


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


def balances(state: dict) -> dict[str, Decimal]:
    return {a["Name"]: Decimal(str(a["CurrentBalance"])) for a in state["entities"]["Account"]}


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
        accounts_by_name = await map_accounts(client, qbo, headers, realm)
        events = month_of_activity(t)
        await apply(client, *events)
        posted = await wait_for(lambda: all_posted(client, headers, 14))

        state = await qbo.state(realm)
        invoices = {i["DocNumber"]: Decimal(str(i["Balance"])) for i in state["entities"]["Invoice"]}
        assert invoices == {number: Decimal("0") for _, number, _, _ in INVOICES}
        accounts = balances(state)
        payouts = [e for e in events if e.type == "payout.paid"]
        fees = sum(i["fee_minor"] for e in payouts for i in e.data["items"])
        assert accounts["Undeposited Funds"] == 0
        assert accounts["Checking"] == Decimal(sum(e.data["amount_minor"] for e in payouts)) / 100
        assert accounts["Merchant Processing Fees"] == Decimal(processor_expense(payouts)) / 100
        deposits = {d["DocNumber"]: Decimal(str(d["TotalAmt"])) for d in state["entities"]["Deposit"]}
        by_reference = {e["subject_id"]: e["reference"] for e in posted if e["purpose"] == "deposit"}
        for event in payouts:
            assert deposits[by_reference[event.data["payout_id"]]] * 100 == event.data["amount_minor"]
        overpaid = next(p for p in state["entities"]["Payment"] if Decimal(str(p["TotalAmt"])) == Decimal("350"))
        assert Decimal(str(overpaid["UnappliedAmt"])) == Decimal("50")
        # A refund and two disputes out of clearing; the won one back in once, however often it was told.
        assert len(state["entities"]["RefundReceipt"]) == 3
        assert [Decimal(str(r["TotalAmt"])) for r in state["entities"]["SalesReceipt"]] == [Decimal("700")]
        assert sorted(e["purpose"] for e in posted if e["purpose"].startswith("dispute")) == \
            ["dispute", "dispute", "dispute_won"]
        assert accounts["Refunds and Chargebacks"] == Decimal("-650")  # revenue given back: 200.00 + 450.00

        # Every write carried our entry id as requestid and the minor version we were written for.
        writes = await qbo.requests(realm)
        assert {w["requestid"] for w in writes} == {e["id"] for e in posted}
        assert {w["minorversion"] for w in writes} == {75}

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["balanced"] is True, report["mismatches"]
        assert report["payments"]["posted_count"] == 7 and report["deposits"]["posted_count"] == 3
        assert report["disputes"]["posted_amount_minor"] == 115_000
        assert report["disputes_won"] == {"count": 1, "amount_minor": 70_000, "posted_count": 1,
                                          "posted_amount_minor": 70_000}
        assert report["fees_minor"] == fees and report["clearing_balance_minor"] == 0
        # Read back from QuickBooks: its clearing, bank and invoices agree with our journal to the cent.
        ledger = report["ledger"]
        assert ledger["system"] == "quickbooks" and ledger["as_of"] is None
        assert {a["role"]: (a["ours_minor"], a["theirs_minor"]) for a in ledger["accounts"]} == \
            {"clearing": (0, 0), "bank": (sum(e.data["amount_minor"] for e in payouts),) * 2}
        assert {i["number"]: i["theirs_minor"] for i in ledger["invoices"]} == {n: 0 for _, n, _, _ in INVOICES}

        async with client.app.state.session_factory() as session:
            published = (await session.execute(text("SELECT topic, count(*) FROM outbox GROUP BY topic"))).all()
        # Besides the postings: the audit entries of connecting and of mapping the accounts.
        assert dict(published) == {"gl.posted": 14, "audit.recorded": 2}

        # Someone moves 12.34 from clearing to the bank by hand in QuickBooks, and an invoice there says
        # 90.00 where the PSA says 100.00: the report lists each difference.
        await qbo.journal_entry(realm, [("Debit", accounts_by_name["Checking"], "12.34"),
                                        ("Credit", accounts_by_name["Undeposited Funds"], "12.34")])
        await qbo.invoice(realm, *BOOKS_TOTAL_DIFFERS)
        await apply(client, *books_total_differs(t))
        await wait_for(lambda: all_posted(client, headers, 15))
        assert_planted_mismatches((await client.get("/v1/gl/reconciliation", headers=headers)).json())


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


async def test_a_convenience_fee_is_posted_once_as_income_and_waits_for_its_account_to_be_mapped(infra, qbo, token):
    t = tenant()
    headers = token(t, "admin")
    realm = await setup_company(qbo)
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, qbo, headers, realm)
        accounts = await map_accounts(client, qbo, headers, realm)  # no convenience fee account yet
        events = surcharged_activity(t)
        await apply(client, *events)
        # Everything else posts; the fee waits, parked and told, for its income account.
        parked = await wait_for(lambda: exception_for(client, headers, "account_not_mapped"))
        assert parked["purpose"] == "convenience_fee" and not parked["retryable"]
        assert "convenience_fee_account_id" in parked["detail"]

        async def all_but_the_fee_posted():
            items = await entries(client, headers)
            return len(items) == 4 and all(e["state"] == ("failed" if e["purpose"] == "convenience_fee" else "posted")
                                           for e in items)
        await wait_for(all_but_the_fee_posted)

        mapping = (await client.get("/v1/gl/account-mapping", headers=headers)).json()["mapping"]
        del mapping["validated_at"]
        wrong = await client.put("/v1/gl/account-mapping", headers=headers,
                                 json={**mapping, "convenience_fee_account_id": accounts["Merchant Processing Fees"]})
        assert wrong.status_code == 422
        assert [e["loc"] for e in wrong.json()["errors"]] == [["convenience_fee_account_id"]]
        # Naming the account re-queues the fee at once: no operator retry needed.
        mapped = await client.put("/v1/gl/account-mapping", headers=headers,
                                  json={**mapping, "convenience_fee_account_id": accounts["Card Convenience Fees"]})
        assert mapped.status_code == 200, mapped.text
        posted = await wait_for(lambda: all_posted(client, headers, 4))
        await apply(client, events[1])  # the settlement told again changes nothing
        assert len(await entries(client, headers)) == 4

        state = await qbo.state(realm)
        accounts_now = balances(state)
        assert accounts_now["Undeposited Funds"] == 0  # Stripe's 1,030.00 charge, cleared to the cent
        assert accounts_now["Card Convenience Fees"] == Decimal("30")
        assert accounts_now["Checking"] == Decimal("799.83")  # 1,030.00 - 30.17 fees - 200.00 refunded
        assert accounts_now["Merchant Processing Fees"] == Decimal("30.17")
        assert accounts_now["Refunds and Chargebacks"] == Decimal("-200")
        fee = next(e for e in posted if e["purpose"] == "convenience_fee")
        [journal_entry] = state["entities"]["JournalEntry"]
        assert (journal_entry["Id"], journal_entry["DocNumber"]) == (fee["external_id"], fee["reference"])
        # The deposit links the payment at its amount; the fee leaves clearing on a line of its own.
        [deposit] = state["entities"]["Deposit"]
        assert sorted(Decimal(str(line["Amount"])) for line in deposit["Line"]) == \
            [Decimal("-200"), Decimal("-30.17"), Decimal("30"), Decimal("1000")]
        writes = await qbo.requests(realm)
        assert sorted(w["requestid"] for w in writes) == sorted(e["id"] for e in posted)  # one write an entry

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["balanced"] is True, report["mismatches"]
        assert report["convenience_fees"] == {"count": 1, "amount_minor": 3_000, "posted_count": 1,
                                              "posted_amount_minor": 3_000}
        assert {a["role"]: (a["ours_minor"], a["theirs_minor"]) for a in report["ledger"]["accounts"]} == \
            {"clearing": (0, 0), "bank": (79_983, 79_983)}
        async with client.app.state.session_factory() as session:
            told = (await session.execute(text(
                "SELECT topic, payload FROM outbox WHERE topic LIKE 'gl.post%' ORDER BY seq"))).all()
        assert [(topic, json.loads(p)["data"]["purpose"]) for topic, p in told if json.loads(p)["data"]["entry_id"]
                == fee["id"]] == [("gl.post_failed", "convenience_fee"), ("gl.posted", "convenience_fee")]


@pytest.mark.parametrize("status", ["lost", "won"])
async def test_a_dispute_takes_its_share_of_the_convenience_fee_out_of_clearing_and_the_fee_income(
        infra, qbo, token, status):
    """A dispute that took the fee with the payment is a JournalEntry (refunds and the fee's income debited,
    clearing credited), its return the mirror; both wait, like the fee, for the income account."""
    t = tenant()
    headers = token(t, "admin")
    realm = await setup_company(qbo)
    count = 8 if status == "won" else 6  # two payments, the fee, deposits, the dispute (and its return)
    async with running_service(infra, SERVICE, consumers=False) as client:
        await connect(client, qbo, headers, realm)
        accounts = await map_accounts(client, qbo, headers, realm)  # no convenience fee account yet
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

        state = await qbo.state(realm)
        now = balances(state)
        assert now["Undeposited Funds"] == 0  # Stripe's withdrawal of 1,030.00 cleared to the cent
        # Lost: the fee's income and the invoice's payment both went back; won: both came back.
        assert now["Card Convenience Fees"] == (Decimal("30") if status == "won" else 0)
        assert now["Refunds and Chargebacks"] == (0 if status == "won" else Decimal("-1000"))
        assert now["Merchant Processing Fees"] == Decimal("80.27")  # 30.17 + 35.10 + the 15.00 dispute fee
        assert now["Checking"] == (Decimal("2149.73") if status == "won" else Decimal("1119.73"))
        disputes = [e for e in posted if e["purpose"].startswith("dispute")]
        journal_entries = {j["DocNumber"]: j for j in state["entities"]["JournalEntry"]}
        assert state["entities"].get("RefundReceipt", []) == state["entities"].get("SalesReceipt", []) == []
        for dispute in disputes:
            record = journal_entries[dispute["reference"]]
            assert record["Id"] == dispute["external_id"]
            assert {(line["JournalEntryLineDetail"]["PostingType"], Decimal(str(line["Amount"])))
                    for line in record["Line"]} == ({("Debit", Decimal("1000")), ("Debit", Decimal("30")),
                                                     ("Credit", Decimal("1030"))} if dispute["purpose"] == "dispute"
                                                    else {("Credit", Decimal("1000")), ("Credit", Decimal("30")),
                                                          ("Debit", Decimal("1030"))})
        writes = await qbo.requests(realm)
        assert sorted(w["requestid"] for w in writes) == sorted(e["id"] for e in posted)  # one write an entry

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["clearing_balance_minor"] == 0
        assert {a["role"]: (a["ours_minor"], a["theirs_minor"]) for a in report["ledger"]["accounts"]}["clearing"] \
            == (0, 0)
