"""`payout.paid` from a Stripe payout and its balance transactions, served by the project's
Stripe-format simulator (`payloop.simulators.stripe_extras`; localstripe has no payouts): every
charge, refund and fee it contains, to the cent, emitted once."""
from datetime import date

import httpx

from payloop.embedded import free_port
from payloop.simulators.stripe_extras import StripeExtras

from payloop_payments.models import Payment, Refund
from payloop_payments.settings import PaymentsSettings
from payloop_payments.stripe_gateway import StripeGateway


async def test_payout_paid_lists_every_item_and_nets_to_the_deposit(payments, token, kit):
    headers = token("t-po", "admin")
    await kit.seed_tenant(payments, "t-po")
    await kit.seed_client(payments, "t-po", "acme")
    await kit.seed_invoice(payments, "t-po", "acme", "p-1", 10_000, due=date(2026, 7, 1))
    await kit.seed_invoice(payments, "t-po", "acme", "p-2", 5_000, due=date(2026, 7, 2))
    method = await kit.save_card(payments, headers, "acme")
    paid = []
    for invoice_id in ("p-1", "p-2"):
        response = await payments.post("/v1/payments", headers=headers, json={
            "client_id": "acme", "payment_method_id": method["id"], "invoice_ids": [invoice_id]})
        assert response.status_code == 201, response.text
        paid.append(response.json()["id"])
    refund = await payments.post(f"/v1/payments/{paid[1]}/refunds", json={"amount_minor": 1_000}, headers=headers)
    assert refund.status_code == 201, refund.text
    async with payments.app.state.session_factory() as session:
        charges = [(await session.get(Payment, __import__("uuid").UUID(p))).stripe_charge_id for p in paid]
        refund_id = (await session.get(Refund, __import__("uuid").UUID(refund.json()["id"]))).stripe_refund_id

    sim = await StripeExtras(port=free_port()).start()
    try:
        async with httpx.AsyncClient(base_url=sim.url) as stripe_books:
            made = (await stripe_books.post("/_sim/payouts", json={
                "currency": "usd", "arrival_date": 1_783_296_000,  # 2026-07-06
                "transactions": [{"type": "charge", "source": charges[0], "amount": 10_000, "fee": 320},
                                 {"type": "charge", "source": charges[1], "amount": 5_000, "fee": 175},
                                 {"type": "refund", "source": refund_id, "amount": -1_000, "fee": 0},
                                 {"type": "stripe_fee", "source": None, "amount": -200, "fee": 0}]})).json()
        # The webhook reads the payout's balance transactions from the Stripe-format server.
        payments.app.state.gateway = StripeGateway(PaymentsSettings(stripe_api_base=sim.url))
        body, signature = kit.signed(made["event"])
        assert (await payments.post("/webhooks/stripe", content=body, headers=signature)).json()["duplicate"] is False
        body, signature = kit.signed(made["event"])  # Stripe redelivers
        assert (await payments.post("/webhooks/stripe", content=body, headers=signature)).json()["duplicate"] is True
    finally:
        await sim.stop()

    events = await kit.outbox_events(payments, "payout.paid", "t-po")
    assert len(events) == 1
    data = events[0]["data"]
    assert data["payout_id"] == made["payout"]["id"] and data["arrival_date"] == "2026-07-06"
    assert data["amount_minor"] == 10_000 - 320 + 5_000 - 175 - 1_000 - 200 and data["currency"] == "USD"
    assert sorted((i["type"], i["payment_id"], i["gross_minor"], i["fee_minor"], i["net_minor"]) for i in data["items"]) \
        == sorted([("charge", paid[0], 10_000, 320, 9_680), ("charge", paid[1], 5_000, 175, 4_825),
                   ("refund", paid[1], -1_000, 0, -1_000), ("fee", None, -200, 0, -200)])
    assert sum(i["net_minor"] for i in data["items"]) == data["amount_minor"]
