"""Issue 9 (2d): the auto-pay loop of test_autopay_lifecycle.py with the other PSAs and ledgers.

For each variant, across the six service processes: a PSA invoice due today -> psa_ingest sync ->
payments charges the saved card on the due date, once -> the PSA shows it paid with one payment written
back -> the ledger holds the payment -> a payout becomes a deposit with the fee, the clearing account back
at zero -> reporting shows nothing open and its read models equal a recomputation from the services'
own databases -> the partner receives payment.settled and payout.paid, signed.
"""
import pytest
import pytest_asyncio

from e2e_harness import Msp, today, wait_for
from recomputation import settled_mismatches
from vendor_sides import (AutotaskSide, ConnectWiseSide, HaloSide, QuickBooksLedger, SuperOpsSide, XeroLedger,
                          money)

AMOUNT, AMOUNT_MINOR, FEE = "499.00", 49_900, 1_477  # Stripe's 2.9% + 30 cents

VARIANTS = {
    "connectwise-xero": (ConnectWiseSide, XeroLedger),
    "autotask-quickbooks": (AutotaskSide, QuickBooksLedger),
    "halopsa-quickbooks": (HaloSide, QuickBooksLedger),
    "superops-xero": (SuperOpsSide, XeroLedger),
}


@pytest_asyncio.fixture(params=sorted(VARIANTS))
async def variant(request, platform, partner):
    psa_kind, ledger_kind = VARIANTS[request.param]
    psa, ledger = psa_kind(), ledger_kind()
    await psa.start()
    msp = Msp(platform, None, partner)
    try:
        await msp.onboard_tenant()
        await ledger.connect(msp)
        await msp.connect_psa(psa.connection())
        yield msp, psa, ledger
    finally:
        await psa.stop()


async def test_autopay_loop_closes_with_every_psa_and_ledger(variant):
    msp, psa, ledger = variant
    due = psa.invoice_due_today(AMOUNT)
    await ledger.invoice_in_books(msp, due, AMOUNT_MINOR)

    counts = (await msp.sync())["counts"]
    assert counts.get("errors", 0) == 0, counts  # the poller may have brought the invoice in first
    client_id = (await msp.psa_record("client", due.company_external_id))["id"]
    invoice_id = (await msp.psa_record("invoice", due.external_id))["id"]
    async with msp.api("payments") as payments, msp.api("reporting") as reporting:
        async def known_to_payments():
            answer = await payments.get(f"/v1/clients/{client_id}/invoices")
            rows = answer.json() if answer.status_code == 200 else []
            return next((i for i in rows if i["invoice_id"] == invoice_id), None)
        known = await wait_for(known_to_payments, "payments to learn of the invoice")
        assert known["open_minor"] == AMOUNT_MINOR and known["due_on"] == today().isoformat()

        async def receivables(amount: int):
            answer = await reporting.get("/v1/metrics", params={"client_id": client_id})
            return answer.json() if answer.status_code == 200 and answer.json()["receivables_minor"] == amount else None
        await wait_for(lambda: receivables(AMOUNT_MINOR), "reporting to show the invoice open")

        method = await msp.save_card(client_id)
        enrolled = await payments.put(f"/v1/clients/{client_id}/autopay",
                                      json={"payment_method_id": method["id"], "rule": "on_due"})
        assert enrolled.status_code == 200, enrolled.text

        async def settled():
            items = (await payments.get("/v1/payments", params={"client_id": client_id})).json()["items"]
            return items if items and items[0]["status"] == "succeeded" else None
        paid = await wait_for(settled, "the auto-pay charge to settle")
        assert [(p["origin"], p["amount_minor"]) for p in paid] == [("autopay", AMOUNT_MINOR)]

        async def paid_in_psa():
            return psa.paid(due.external_id)
        await wait_for(paid_in_psa, f"{psa.source} to show the invoice paid")
        assert psa.payments_recorded(due.external_id) == 1

        async def payment_in_books():
            return await ledger.payments(msp)
        assert await wait_for(payment_in_books, f"the payment in {ledger.system}") == [money(AMOUNT)]
        assert await ledger.invoice_balances(msp) == [0]

        await wait_for(lambda: _async(msp.partner.of_type("payment.settled", msp.tenant)), "the partner webhook")
        [event] = msp.partner.of_type("payment.settled", msp.tenant)
        assert event["data"]["amount_minor"] == AMOUNT_MINOR and msp.partner.rejected == []

        payout = await msp.platform.world.stripe.payout(
            [{"type": "charge", "source": event["data"]["processor"]["charge_id"], "amount": AMOUNT_MINOR, "fee": FEE}])
        assert (await msp.deliver_stripe_event(payout["event"]))["duplicate"] is False

        async def deposited():
            return await ledger.deposits(msp) == 1
        await wait_for(deposited, f"the deposit in {ledger.system}")
        assert await ledger.balances(msp) == {"bank": money("484.23"), "fees": money("14.77"), "clearing": 0}

        await wait_for(lambda: _async(msp.partner.of_type("payout.paid", msp.tenant)), "payout.paid at the partner")
        assert await wait_for(lambda: receivables(0), "reporting to show the invoice paid")

    await msp.ledger_entries(("deposit", "posted"), ("payment", "posted"))

    assert await settled_mismatches(msp.platform.databases, msp.tenant) == []


async def _async(value):
    return value
