"""Issue 9 (2c): an auto-pay card declines on the due date (insufficient funds); the decline is scheduled
for a retry, the client gets a retry notice instead of dunning, and nothing reaches the PSA or the books.
The payments clock then moves to the retry, which succeeds: the PSA shows the invoice paid, the books
hold the payment, reporting shows nothing open, and its read models equal a recomputation.
"""
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from e2e_harness import wait_for
from recomputation import settled_mismatches

ANY_HOUR = {"name": "E2E", "is_default": True, "business_days": False, "send_hour": 0,
            "quiet_start_hour": 0, "quiet_end_hour": 0, "autopay_courtesy": False}


async def test_declined_autopay_is_scheduled_for_retry_and_noticed_not_dunned(msp):
    cw, platform = msp.cw, msp.platform
    company_id = msp.clean_client()
    address = cw.state.companies[company_id]["invoiceToEmailAddress"] = f"ap@{msp.tenant}.example"

    async with msp.api("collections") as collections, msp.api("payments") as payments:
        async def policy_stored():
            answer = await collections.put("/v1/collections/policies/e2e", json=ANY_HOUR)
            return answer if answer.status_code != 404 else None
        assert (await wait_for(policy_stored, "collections to learn of the tenant")).status_code == 200

        # Enrolled before the invoice exists, so no service ever sees it without auto-pay.
        await msp.sync()
        client_id = (await msp.psa_record("client", str(company_id)))["id"]

        async def client_known():
            answer = await payments.get(f"/v1/clients/{client_id}/invoices")
            return answer.status_code == 200 and answer.json()
        await wait_for(client_known, "payments to learn of the client")
        method = await msp.save_card(client_id)
        # The card's bank refuses for now: a soft decline, retried on the tenant's schedule.
        async with httpx.AsyncClient(base_url=platform.world.stripe.url) as sandbox:
            declining = await sandbox.post(f"/_sim/payment_methods/{method['stripe_payment_method_id']}/decline",
                                           json={"decline_code": "insufficient_funds"})
            assert declining.status_code == 200, declining.text
        answer = await payments.put(f"/v1/clients/{client_id}/autopay",
                                    json={"payment_method_id": method["id"], "rule": "on_due"})
        assert answer.status_code == 200, answer.text

        async def autopay_known():
            state = (await collections.get(f"/v1/collections/clients/{client_id}")).json()
            return state["autopay_enrolled"]
        await wait_for(autopay_known, "collections to learn of the enrolment")

        invoice = msp.bill(company_id, [("USR-M365", "10", "22.00", "Microsoft 365 support")])
        await msp.sync()
        invoice_id = (await msp.psa_record("invoice", str(invoice["id"])))["id"]

        async def failed():
            items = (await payments.get("/v1/payments", params={"client_id": client_id})).json()["items"]
            return items if items and items[0]["status"] == "failed" else None
        [payment] = await wait_for(failed, "the declined charge")
        assert payment["origin"] == "autopay" and payment["amount_minor"] == 22_000
        assert [a["status"] for a in payment["attempts"]] == ["failed"]
        retry_at = datetime.fromisoformat(payment["next_attempt_at"])
        assert timedelta(hours=12) < retry_at - datetime.now(UTC) < timedelta(days=2)  # day 1 of the schedule

        # Collections: a retry notice, not a dunning reminder.
        async with httpx.AsyncClient(base_url=platform.world.smtp_web) as sink:
            async def notices():
                return (await sink.get("/messages", params={"to": address})).json()["messages"]
            [notice] = await wait_for(notices, "the retry notice")
        assert notice["subject"].startswith("We could not process your payment")
        timeline = (await collections.get(f"/v1/collections/clients/{client_id}/timeline")).json()["items"]
        assert "payment_failed" in {e["kind"] for e in timeline}
        messages = [m for m in (await collections.get("/v1/collections/messages")).json()
                    if m["client_id"] == client_id]
        assert [(m["template"], m["invoice_ids"]) for m in messages] == [("retry_notice", [invoice_id])]

        # Nothing was collected: the invoice stays open everywhere.
        listed = (await payments.get(f"/v1/clients/{client_id}/invoices")).json()
        assert [i["open_minor"] for i in listed if i["invoice_id"] == invoice_id] == [22_000]
        assert cw.payments_of(invoice["id"]) == []
        assert cw.state.invoices[invoice["id"]]["status"]["name"] != "Paid"
        assert (await msp.books())["entities"].get("Payment", []) == []

        # Funds arrive; the payments clock moves to the retry, which settles the invoice.
        async with httpx.AsyncClient(base_url=platform.world.stripe.url) as sandbox:
            cleared = await sandbox.post(f"/_sim/payment_methods/{method['stripe_payment_method_id']}/decline",
                                         json={"decline_code": None})
            assert cleared.status_code == 200, cleared.text
        await msp.invoice_in_books(invoice["invoiceNumber"], cw.state.companies[company_id]["name"], 22_000)
        try:
            await msp.payments_clock(now=(retry_at + timedelta(minutes=1)).isoformat())

            async def recovered():
                items = (await payments.get("/v1/payments", params={"client_id": client_id})).json()["items"]
                return items if items and items[0]["status"] == "succeeded" else None
            [payment] = await wait_for(recovered, "the retry to settle")
        finally:  # the clock is the whole payments process's: give the other tests wall time back
            await msp.payments_clock(now=datetime.now(UTC).isoformat())
        assert [a["status"] for a in payment["attempts"]] == ["failed", "succeeded"]
        assert payment["amount_minor"] == 22_000

    async def paid_in_psa():
        return cw.state.invoices[invoice["id"]]["status"]["name"] == "Paid"
    await wait_for(paid_in_psa, "ConnectWise to show the invoice paid")
    assert [Decimal(str(p["amount"])) for p in cw.payments_of(invoice["id"])] == [Decimal("220.00")]

    async def payment_in_books():
        return (await msp.books())["entities"].get("Payment")
    assert [Decimal(str(p["TotalAmt"])) for p in await wait_for(payment_in_books, "the payment in QuickBooks")] == \
        [Decimal("220.00")]
    async with msp.api("reporting") as reporting:
        async def nothing_open():  # as of the retry's day: the payments clock settled it then
            metrics = (await reporting.get("/v1/metrics", params={
                "client_id": client_id, "as_of": retry_at.date().isoformat()})).json()
            return metrics["receivables_minor"] == 0
        await wait_for(nothing_open, "reporting to show nothing open")
    assert await settled_mismatches(platform.databases, msp.tenant) == []
