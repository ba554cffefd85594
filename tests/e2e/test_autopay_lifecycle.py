"""Issue 9 (2a): an auto-pay client's invoice from the PSA to cash in the books, across six processes.

ConnectWise invoice -> psa_ingest sync -> invoice.created -> payments charges the saved card on the due
date -> payment.settled -> ConnectWise shows the invoice paid -> Stripe pays out -> QuickBooks holds the
payment and a deposit with the fee -> reporting's aging and DSO move -> the partner's endpoint receives
both events, signed.
"""
from decimal import Decimal

from e2e_harness import today, wait_for

FEE = 1_477  # Stripe's 2.9% + 30 cents on 499.00


async def test_autopay_invoice_closes_the_whole_loop(msp):
    cw = msp.cw
    company_id = msp.clean_client()  # last year's invoices were paid
    invoice = msp.bill(company_id, [("MS-BASE", "1", "499.00", "Managed Services - Base Platform")])
    company = cw.state.companies[company_id]
    await msp.invoice_in_books(invoice["invoiceNumber"], company["name"], 49_900)

    # PSA -> psa_ingest -> invoice.created -> payments (and everyone else).
    counts = (await msp.sync())["counts"]
    assert counts.get("errors", 0) == 0, counts  # psa_ingest's poller may have brought the invoice in first
    client_id = (await msp.psa_record("client", str(company_id)))["id"]
    invoice_id = (await msp.psa_record("invoice", str(invoice["id"])))["id"]
    async with msp.api("payments") as payments, msp.api("reporting") as reporting:
        async def known_to_payments():
            answer = await payments.get(f"/v1/clients/{client_id}/invoices")
            rows = answer.json() if answer.status_code == 200 else []
            return next((i for i in rows if i["invoice_id"] == invoice_id), None)
        known = await wait_for(known_to_payments, "payments to learn of the invoice")
        assert known["open_minor"] == 49_900 and known["due_on"] == today().isoformat()

        async def metrics_with(receivables: int):
            answer = await reporting.get("/v1/metrics", params={"client_id": client_id})
            return answer.json() if answer.status_code == 200 and \
                answer.json()["receivables_minor"] == receivables else None
        before = await wait_for(lambda: metrics_with(49_900), "reporting to show the invoice open")
        assert before["open_invoices"] == 1 and before["dso"] > 0

        # A card saved through Stripe, auto-pay on the due date: the scheduler charges it, once.
        method = await msp.save_card(client_id)
        enrolled = await payments.put(f"/v1/clients/{client_id}/autopay",
                                      json={"payment_method_id": method["id"], "rule": "on_due"})
        assert enrolled.status_code == 200, enrolled.text

        async def settled():
            items = (await payments.get("/v1/payments", params={"client_id": client_id})).json()["items"]
            return items if items and items[0]["status"] == "succeeded" else None
        paid = await wait_for(settled, "the auto-pay charge to settle")
        assert [(p["origin"], p["amount_minor"]) for p in paid] == [("autopay", 49_900)]

        # The PSA shows the invoice paid: one payment, written back by psa_ingest.
        async def paid_in_psa():
            return cw.state.invoices[invoice["id"]]["status"]["name"] == "Paid"
        await wait_for(paid_in_psa, "ConnectWise to show the invoice paid")
        assert [Decimal(str(p["amount"])) for p in cw.payments_of(invoice["id"])] == [Decimal("499.00")]

        # QuickBooks: the payment applied to the invoice, sitting in Undeposited Funds.
        async def payment_in_books():
            books = await msp.books()
            return books if books["entities"].get("Payment") else None
        books = await wait_for(payment_in_books, "the payment in QuickBooks")
        assert [Decimal(str(p["TotalAmt"])) for p in books["entities"]["Payment"]] == [Decimal("499.00")]
        assert [Decimal(str(i["Balance"])) for i in books["entities"]["Invoice"]] == [Decimal("0")]

        # The partner receives payment.settled, signed; it carries the charge Stripe will pay out.
        await wait_for(lambda: _async(msp.partner.of_type("payment.settled", msp.tenant)), "the partner webhook")
        [event] = msp.partner.of_type("payment.settled", msp.tenant)
        assert event["data"]["amount_minor"] == 49_900 and msp.partner.rejected == []
        charge_id = event["data"]["processor"]["charge_id"]

        # Stripe pays out the charge less its fee: payout.paid -> a deposit in QuickBooks with the fee.
        payout = await msp.platform.world.stripe.payout(
            [{"type": "charge", "source": charge_id, "amount": 49_900, "fee": FEE}])
        assert (await msp.deliver_stripe_event(payout["event"]))["duplicate"] is False

        async def deposit_in_books():
            books = await msp.books()
            return books if books["entities"].get("Deposit") else None
        books = await wait_for(deposit_in_books, "the deposit in QuickBooks")
        [deposit] = books["entities"]["Deposit"]
        assert Decimal(str(deposit["TotalAmt"])) == Decimal("484.23")
        accounts = {a["Name"]: Decimal(str(a["CurrentBalance"])) for a in books["entities"]["Account"]}
        assert accounts["Checking"] == Decimal("484.23")
        assert accounts["Merchant Processing Fees"] == Decimal("14.77")
        assert accounts["Undeposited Funds"] == 0

        await wait_for(lambda: _async(msp.partner.of_type("payout.paid", msp.tenant)), "payout.paid at the partner")
        [payout_event] = msp.partner.of_type("payout.paid", msp.tenant)
        assert payout_event["data"]["amount_minor"] == 49_900 - FEE

        # Reporting: nothing open any more, DSO down to zero, the invoice paid on time.
        after = await wait_for(lambda: metrics_with(0), "reporting to show the invoice paid")
        assert after["open_invoices"] == 0 and after["dso"] == 0
        # Last year's invoice was paid late (in the PSA, today); this one on its due date.
        assert after["on_time_ratio"] > (before["on_time_ratio"] or 0)
        aging = (await reporting.get("/v1/aging", params={"client_id": client_id})).json()
        assert all(row["buckets"]["total"] == 0 for row in aging["clients"])

    await msp.ledger_entries(("deposit", "posted"), ("payment", "posted"))


async def _async(value):
    return value
