"""Issue 9 (3): every outside system applies a write and then answers too late, once, in the auto-pay loop.

Stripe creates the PaymentIntent (and charges the card) but answers after payments gave up;
ConnectWise records our payment but its answer never reaches psa_ingest in time; QuickBooks applies the
payment, and later the deposit, and answers after gl_posting gave up; the partner's endpoint takes in
payment.settled and keeps the line open past the sender's timeout. Each caller must find out what was
applied before it tries again (with Stripe: the same Idempotency-Key, which gets the first answer):
afterwards the card was charged once, ConnectWise holds one payment, QuickBooks one payment and one
deposit, the partner one message id per event (seen twice, as at-least-once delivery allows), and the read
models equal a recomputation from the services' own databases.
"""
from collections import Counter
from decimal import Decimal

from e2e_harness import wait_for
from payloop.simulators.stripe_sandbox import LateAnswer
from recomputation import settled_mismatches

FEE = 1_477
LATE_S = 6.0  # longer than the callers' timeouts in the e2e platform (Stripe, PSA connection, gl_posting: 5 s)
PARTNER_LATE_S = 11.0  # the webhook sender waits 10 s


async def _async(value):
    return value


async def test_each_outside_write_timed_out_after_applying_is_not_repeated(msp):
    cw = msp.cw
    company_id = msp.clean_client()
    invoice = msp.bill(company_id, [("MS-BASE", "1", "499.00", "Managed Services - Base Platform")])
    await msp.invoice_in_books(invoice["invoiceNumber"], cw.state.companies[company_id]["name"], 49_900)

    # Each outside system applies our next write, then answers too late for us.
    stripe = msp.platform.world.stripe
    stripe.late_answers.append(LateAnswer("/v1/payment_intents", LATE_S))
    cw.fail_next(504, path_contains="/payments", method="POST", apply_first=True, delay_s=LATE_S)
    await msp.qbo_faults(lose_responses=1, lose_delay_s=LATE_S)
    msp.partner.stall_next_s = PARTNER_LATE_S

    await msp.sync()
    client_id = (await msp.psa_record("client", str(company_id)))["id"]
    await msp.enroll_autopay(client_id)

    async def paid_in_psa():
        return cw.state.invoices[invoice["id"]]["status"]["name"] == "Paid"
    await wait_for(paid_in_psa, "ConnectWise to show the invoice paid", timeout=90)

    async def payment_posted():
        async with msp.api("gl_posting") as gl:
            entries = (await gl.get("/v1/gl/entries")).json()["items"]
        return entries if [e["state"] for e in entries] == ["posted"] else None
    await wait_for(payment_posted, "the payment posted to QuickBooks", timeout=90)

    # The partner took payment.settled in while the sender timed out; it is sent again, same message id.
    async def delivered_twice():
        return len(msp.partner.of_type("payment.settled", msp.tenant)) >= 2
    await wait_for(delivered_twice, "payment.settled delivered again", timeout=90)
    [event] = {e["id"]: e for e in msp.partner.of_type("payment.settled", msp.tenant)}.values()

    # The deposit's answer is lost too.
    await msp.qbo_faults(lose_responses=1, lose_delay_s=LATE_S)
    payout = await msp.platform.world.stripe.payout(
        [{"type": "charge", "source": event["data"]["processor"]["charge_id"], "amount": 49_900, "fee": FEE}])
    assert (await msp.deliver_stripe_event(payout["event"]))["duplicate"] is False

    async def all_posted():
        async with msp.api("gl_posting") as gl:
            entries = (await gl.get("/v1/gl/entries")).json()["items"]
        return entries if sorted((e["purpose"], e["state"]) for e in entries) == [
            ("deposit", "posted"), ("payment", "posted")] else None
    await wait_for(all_posted, "the deposit posted to QuickBooks", timeout=90)

    # Every fault fired: each system really applied a write whose answer came too late.
    assert cw.faults == [] and msp.platform.world.qbo_sim.companies[msp.realm].lose_next_response == 0
    assert stripe.late_answers == [] and stripe.replayed  # the retry got Stripe's first answer
    async with msp.api("payments") as payments:
        [charged] = (await payments.get("/v1/payments", params={"client_id": client_id})).json()["items"]
    assert charged["status"] == "succeeded" and [a["status"] for a in charged["attempts"]] == ["succeeded"]
    assert [Decimal(str(p["amount"])) for p in cw.payments_of(invoice["id"])] == [Decimal("499.00")]
    books = await msp.books()
    assert [Decimal(str(p["TotalAmt"])) for p in books["entities"]["Payment"]] == [Decimal("499.00")]
    assert [Decimal(str(d["TotalAmt"])) for d in books["entities"]["Deposit"]] == [Decimal("484.23")]
    accounts = {a["Name"]: Decimal(str(a["CurrentBalance"])) for a in books["entities"]["Account"]}
    assert accounts["Undeposited Funds"] == 0 and accounts["Checking"] == Decimal("484.23")
    ids = Counter(e["id"] for e in msp.partner.received if e["tenant_id"] == msp.tenant)
    assert ids[event["id"]] >= 2 and len(msp.partner.of_type("payment.settled", msp.tenant)) == ids[event["id"]]
    assert msp.partner.rejected == []
    assert await settled_mismatches(msp.platform.databases, msp.tenant) == []
