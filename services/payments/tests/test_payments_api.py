"""Saving a card, paying invoices with allocations, idempotent POSTs and refunds, against localstripe."""
from datetime import date

from payloop_payments import scheduler


async def test_card_payment_allocates_to_invoices_and_overpayment_becomes_credit(payments, token, kit):
    headers = token("t-pay", "admin")
    await kit.seed_tenant(payments, "t-pay")
    await kit.seed_client(payments, "t-pay", "acme")
    await kit.seed_invoice(payments, "t-pay", "acme", "inv-1", 10_000, due=date(2026, 1, 10))
    await kit.seed_invoice(payments, "t-pay", "acme", "inv-2", 5_000, due=date(2026, 1, 20))
    method = await kit.save_card(payments, headers, "acme")
    assert method["type"] == "card" and method["last4"] == "4242"

    # 16,000 pays inv-1 (oldest due) in full, inv-2 in full and 1,000 becomes credit.
    body = {"client_id": "acme", "payment_method_id": method["id"], "amount_minor": 16_000}
    first = await payments.post("/v1/payments", json=body, headers={**headers, "Idempotency-Key": "click-1"})
    assert first.status_code == 201, first.text
    payment = first.json()
    assert payment["status"] == "succeeded"
    assert {a["invoice_id"]: a["amount_minor"] for a in payment["allocations"]} == {"inv-1": 10_000, "inv-2": 5_000}
    assert payment["credit_minor"] == 1_000

    # A double click (same key) returns the same payment and charges nothing more.
    again = await payments.post("/v1/payments", json=body, headers={**headers, "Idempotency-Key": "click-1"})
    assert again.status_code == 201 and again.json()["id"] == payment["id"]
    assert len(await kit.outbox_events(payments, "payment.initiated", "t-pay")) == 1
    settled = await kit.outbox_events(payments, "payment.settled", "t-pay")
    assert len(settled) == 1 and settled[0]["data"]["amount_minor"] == 16_000
    assert settled[0]["data"]["processor"]["payment_intent_id"].startswith("pi_")

    invoices = (await payments.get("/v1/clients/acme/invoices", headers=headers)).json()
    assert [i["open_minor"] for i in invoices] == [0, 0]

    # The credit pays the next invoice before the card is charged.
    await kit.seed_invoice(payments, "t-pay", "acme", "inv-3", 2_500, due=date(2026, 2, 10))
    enrolled = await payments.put("/v1/clients/acme/autopay", headers=headers,
                                  json={"payment_method_id": method["id"], "rule": "on_due"})
    assert enrolled.status_code == 200, enrolled.text
    await scheduler.run_once(payments.app.state.session_factory, payments.app.state.gateway,
                             now=kit.utc(2026, 2, 10))
    page = (await payments.get("/v1/payments?client_id=acme", headers=headers)).json()
    autopay = [p for p in page["items"] if p["origin"] == "autopay"]
    assert len(autopay) == 1 and autopay[0]["amount_minor"] == 1_500


async def test_partial_payment_leaves_balance_and_refund_reopens_invoice(payments, token, kit):
    headers = token("t-part", "payments:write", "ar:read")
    await kit.seed_tenant(payments, "t-part")
    await kit.seed_client(payments, "t-part", "bolt")
    await kit.seed_invoice(payments, "t-part", "bolt", "b-1", 8_000, due=date(2026, 3, 1))
    method = await kit.save_card(payments, headers, "bolt")
    paid = await payments.post("/v1/payments", headers={**headers, "Idempotency-Key": "p1"}, json={
        "client_id": "bolt", "payment_method_id": method["id"], "amount_minor": 3_000,
        "allocations": [{"invoice_id": "b-1", "amount_minor": 3_000}]})
    assert paid.status_code == 201, paid.text
    invoices = (await payments.get("/v1/clients/bolt/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 5_000

    # The same key with a different body is refused rather than silently answered.
    reused = await payments.post("/v1/payments", headers={**headers, "Idempotency-Key": "p1"}, json={
        "client_id": "bolt", "payment_method_id": method["id"], "amount_minor": 4_000})
    assert reused.status_code == 422

    refund = await payments.post(f"/v1/payments/{paid.json()['id']}/refunds", json={"amount_minor": 1_000},
                                 headers={**headers, "Idempotency-Key": "r1"})
    assert refund.status_code == 201, refund.text
    twice = await payments.post(f"/v1/payments/{paid.json()['id']}/refunds", json={"amount_minor": 1_000},
                                headers={**headers, "Idempotency-Key": "r1"})
    assert twice.json()["id"] == refund.json()["id"]
    payment = (await payments.get(f"/v1/payments/{paid.json()['id']}", headers=headers)).json()
    assert payment["status"] == "partially_refunded" and payment["refunded_minor"] == 1_000
    invoices = (await payments.get("/v1/clients/bolt/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 6_000
    refunded = await kit.outbox_events(payments, "payment.refunded", "t-part")
    assert [e["data"]["refunded_minor"] for e in refunded] == [1_000]

    too_much = await payments.post(f"/v1/payments/{paid.json()['id']}/refunds", json={"amount_minor": 2_001},
                                   headers={**headers, "Idempotency-Key": "r2"})
    assert too_much.status_code == 422


async def test_other_tenant_sees_nothing(payments, token, kit):
    owner = token("t-own", "admin")
    await kit.seed_tenant(payments, "t-own")
    await kit.seed_client(payments, "t-own", "zed")
    await kit.seed_invoice(payments, "t-own", "zed", "z-1", 1_000, due=date(2026, 3, 1))
    method = await kit.save_card(payments, owner, "zed")
    paid = await payments.post("/v1/payments", headers=owner, json={
        "client_id": "zed", "payment_method_id": method["id"]})
    assert paid.status_code == 201, paid.text
    stranger = token("t-stranger", "admin")
    assert (await payments.get(f"/v1/payments/{paid.json()['id']}", headers=stranger)).status_code == 404
    assert (await payments.get("/v1/clients/zed/invoices", headers=stranger)).status_code == 404
    assert (await payments.get("/v1/clients/zed/payment-methods", headers=stranger)).status_code == 404
    assert (await payments.get("/v1/payments", headers=stranger)).json()["items"] == []
    assert (await payments.post(f"/v1/payments/{paid.json()['id']}/refunds", json={},
                                headers=stranger)).status_code == 404
    assert (await payments.post("/v1/payments", headers=stranger, json={
        "client_id": "zed", "payment_method_id": method["id"]})).status_code == 404
    assert (await payments.put("/v1/clients/zed/autopay", headers=stranger,
                               json={"payment_method_id": method["id"]})).status_code == 404
