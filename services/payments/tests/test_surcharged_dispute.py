"""A dispute of a card payment that carried a convenience fee: Stripe disputes the whole charge (invoices
plus fee), `disputed_minor` stays what the invoices get back, and `disputed_surcharge_minor` says how
much of the fee the processor took (and, when won, gave back), so the books can follow the money."""
import hashlib
import hmac
import json
import time
import uuid
from datetime import date

from payloop.checkout_links import mint_checkout_token

from payloop_payments.api import gateway_of
from payloop_payments.models import Payment
from payloop_payments.settings import payments_settings


def signed(event: dict) -> tuple[bytes, dict]:
    body, stamp = json.dumps(event).encode(), int(time.time())
    key = payments_settings().webhook_secret().encode()
    signature = hmac.new(key, f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"Stripe-Signature": f"t={stamp},v1={signature}", "Content-Type": "application/json"}


async def surcharged_payment(payments, token, kit, tenant: str) -> tuple[str, str]:
    """A checkout card payment of a 10,000 invoice with its 250 (2.5 %) convenience fee: (payment, charge)."""
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant, convenience_fee={"card_basis_points": 250, "ach_fixed_minor": 0})
    await kit.seed_client(payments, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "s-1", 10_000, due=date.today())
    link = mint_checkout_token(tenant, "acme", [])
    setup = (await payments.post(f"/checkout/{link}/setup-intents", json={})).json()
    await gateway_of(payments.app).confirm_setup_intent(setup["setup_intent_id"], "pm_card_visa", None)
    paid = await payments.post(f"/checkout/{link}/payments", headers={"Idempotency-Key": f"{tenant}-pay"}, json={
        "setup_intent_id": setup["setup_intent_id"], "card_fee_minor": 250,
        "allocations": [{"invoice_id": "s-1", "amount_minor": 10_000}]})
    assert paid.status_code == 201, paid.text
    async with payments.app.state.session_factory() as session:
        payment = await session.get(Payment, uuid.UUID(paid.json()["payment_id"]))
    assert (payment.amount_minor, payment.surcharge_minor) == (10_000, 250)
    return str(payment.id), payment.stripe_charge_id


async def tell(payments, kind: str, dispute: dict) -> None:
    event = {"id": f"evt_{uuid.uuid4().hex}", "type": kind, "created": int(time.time()),
             "data": {"object": {"object": "dispute", "currency": "usd", "reason": "fraudulent", **dispute}}}
    response = await payments.post("/webhooks/stripe", content=signed(event)[0], headers=signed(event)[1])
    assert response.status_code == 200, response.text


async def test_a_dispute_of_the_whole_charge_says_how_much_of_the_fee_it_took_and_gave_back(payments, token, kit):
    tenant = f"t-sdp-{uuid.uuid4().hex[:8]}"
    _, charge = await surcharged_payment(payments, token, kit, tenant)
    dispute = {"id": f"dp_{tenant}", "charge": charge, "amount": 10_250}
    await tell(payments, "charge.dispute.created", {**dispute, "status": "needs_response"})
    await tell(payments, "charge.dispute.funds_withdrawn", {**dispute, "status": "needs_response"})
    await tell(payments, "charge.dispute.closed", {**dispute, "status": "won"})

    told = [(e["data"]["status"], e["data"]["disputed_minor"], e["data"]["disputed_surcharge_minor"])
            for e in await kit.outbox_events(payments, "payment.disputed", tenant)]
    # The invoice's 10,000 as before; the fee's 250 beside it, withdrawn and, the dispute won, returned.
    assert told == [("needs_response", 10_000, 250), ("won", 10_000, 250)]


async def test_a_dispute_short_of_the_invoices_takes_none_of_the_fee(payments, token, kit):
    tenant = f"t-sdq-{uuid.uuid4().hex[:8]}"
    _, charge = await surcharged_payment(payments, token, kit, tenant)
    await tell(payments, "charge.dispute.created",
               {"id": f"dp_{tenant}", "charge": charge, "amount": 4_000, "status": "needs_response"})
    await tell(payments, "charge.dispute.closed",
               {"id": f"dp_{tenant}", "charge": charge, "amount": 4_000, "status": "lost"})

    told = [(e["data"]["status"], e["data"]["disputed_minor"], e["data"]["disputed_surcharge_minor"])
            for e in await kit.outbox_events(payments, "payment.disputed", tenant)]
    assert told == [("needs_response", 4_000, 0), ("lost", 4_000, 0)]


async def test_after_a_partial_refund_the_dispute_of_the_rest_still_takes_the_whole_fee(payments, token, kit):
    """Refunds give back invoice money only, never the fee: the fee is all there for a dispute to take."""
    tenant = f"t-sdr-{uuid.uuid4().hex[:8]}"
    payment, charge = await surcharged_payment(payments, token, kit, tenant)
    refund = await payments.post(f"/v1/payments/{payment}/refunds", json={"amount_minor": 2_000},
                                 headers={**token(tenant, "admin"), "Idempotency-Key": f"{tenant}-refund"})
    assert refund.status_code == 201, refund.text
    await tell(payments, "charge.dispute.created",
               {"id": f"dp_{tenant}", "charge": charge, "amount": 8_250, "status": "needs_response"})

    told = [(e["data"]["disputed_minor"], e["data"]["disputed_surcharge_minor"])
            for e in await kit.outbox_events(payments, "payment.disputed", tenant)]
    assert told == [(8_000, 250)]
