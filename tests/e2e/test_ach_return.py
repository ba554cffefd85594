"""Issue 9 (2c): an ACH auto-pay debit goes `processing`, settles days later, and is then returned by the
bank (R01): the return is reversed everywhere.

Across the six processes and the Stripe sandbox: the debit is `processing` (nothing dunned, nothing in the
PSA or the books) -> the sandbox's clock moves four days -> payment.settled -> ConnectWise shows it paid,
QuickBooks holds the payment -> the bank returns the debit -> ConnectWise holds a reversing payment and the
invoice is owed again, the books hold the reversal, reporting shows the balance open again, and its read
models equal a recomputation from the services' own databases.
"""
from decimal import Decimal

import httpx

from e2e_harness import wait_for
from recomputation import settled_mismatches

AMOUNT = 49_900


async def test_a_returned_ach_debit_is_reversed_in_the_psa_the_books_and_the_reports(msp):
    cw, platform = msp.cw, msp.platform
    company_id = msp.clean_client()
    invoice = msp.bill(company_id, [("MS-BASE", "1", "499.00", "Managed Services - Base Platform")])
    await msp.invoice_in_books(invoice["invoiceNumber"], cw.state.companies[company_id]["name"], AMOUNT)
    await msp.sync()
    client_id = (await msp.psa_record("client", str(company_id)))["id"]

    async with msp.api("payments") as payments, msp.api("reporting") as reporting:
        async def invoice_known():
            answer = await payments.get(f"/v1/clients/{client_id}/invoices")
            return answer.status_code == 200 and any(i["open_minor"] == AMOUNT for i in answer.json())
        await wait_for(invoice_known, "payments to learn of the invoice")
        method = await msp.save_bank_account(client_id)
        assert (method["type"], method["last4"]) == ("ach", "6789")
        answer = await payments.put(f"/v1/clients/{client_id}/autopay",
                                    json={"payment_method_id": method["id"], "rule": "on_due"})
        assert answer.status_code == 200, answer.text

        async def payment_in(status: str):
            items = (await payments.get("/v1/payments", params={"client_id": client_id})).json()["items"]
            return items[0] if items and items[0]["status"] == status else None
        await wait_for(lambda: payment_in("processing"), "the debit to be processing")
        assert cw.payments_of(invoice["id"]) == [] and (await msp.books())["entities"].get("Payment") is None

        # Four banking days later the debit clears.
        async with httpx.AsyncClient(base_url=platform.world.stripe.url) as sandbox:
            advanced = (await sandbox.post("/_sim/advance", json={"days": 4})).json()
        assert "payment_intent.succeeded" in [e["type"] for e in advanced["events"]]
        await wait_for(lambda: payment_in("succeeded"), "the debit to settle")

        async def paid_in_psa():
            return cw.state.invoices[invoice["id"]]["status"]["name"] == "Paid"
        await wait_for(paid_in_psa, "ConnectWise to show the invoice paid")

        async def entries(*expected):
            async with msp.api("gl_posting") as gl:
                found = sorted((e["purpose"], e["state"]) for e in (await gl.get("/v1/gl/entries")).json()["items"])
            return found if found == sorted(expected) else None
        await wait_for(lambda: entries(("payment", "posted")), "the payment posted to QuickBooks")

        # The bank returns it (R01, insufficient funds).
        settled = await wait_for(lambda: _async(msp.partner.of_type("payment.settled", msp.tenant)),
                                 "payment.settled at the partner")
        charge_id = settled[0]["data"]["processor"]["charge_id"]
        async with httpx.AsyncClient(base_url=platform.world.stripe.url) as sandbox:
            returned = await sandbox.post(f"/_sim/charges/{charge_id}/return", json={"failure_code": "insufficient_funds"})
            assert returned.status_code == 200, returned.text

        # PSA: a reversing payment, the invoice owed again.
        async def reversed_in_psa():
            amounts = [Decimal(str(p["amount"])) for p in cw.payments_of(invoice["id"])]
            return amounts if amounts == [Decimal("499.00"), Decimal("-499.00")] else None
        await wait_for(reversed_in_psa, "ConnectWise to hold the reversal")
        assert cw.state.invoices[invoice["id"]]["status"]["name"] != "Paid"
        assert Decimal(str(cw.state.invoices[invoice["id"]]["balance"])) == Decimal("499.00")

        # Books: the payment and its reversal, each posted once.
        await wait_for(lambda: entries(("payment", "posted"), ("dispute", "posted")), "the reversal in QuickBooks")

        # Payments and reporting: the balance is open again, the return scheduled for re-presentment.
        listed = (await payments.get(f"/v1/clients/{client_id}/invoices")).json()
        assert sum(i["open_minor"] for i in listed) == AMOUNT

        async def reopened():
            metrics = (await reporting.get("/v1/metrics", params={"client_id": client_id})).json()
            return metrics["receivables_minor"] == AMOUNT
        await wait_for(reopened, "reporting to show the invoice owed again")
    assert await settled_mismatches(platform.databases, msp.tenant) == []


async def _async(value):
    return value
