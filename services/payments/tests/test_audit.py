"""Refunds, auto-pay enrolment and cancellation, and removing a payment method are audited: each
writes `audit.recorded` to the outbox in the transaction of the action, naming who, what and on what."""
from datetime import date

import jwt
from sqlalchemy import text

from payloop_payments.api import gateway_of
from payloop_payments.settings import payments_settings


def subject(headers: dict) -> str:
    return jwt.decode(headers["Authorization"].removeprefix("Bearer "), options={"verify_signature": False})["sub"]


async def test_sensitive_payment_actions_are_audited_without_secrets(payments, token, kit):
    headers = token("t-audit", "payments:write", "ar:read")
    await kit.seed_tenant(payments, "t-audit")
    await kit.seed_client(payments, "t-audit", "acme")
    await kit.seed_invoice(payments, "t-audit", "acme", "a-1", 8_000, due=date(2026, 3, 1))
    method = await kit.save_card(payments, headers, "acme")
    paid = await payments.post("/v1/payments", headers={**headers, "Idempotency-Key": "p1"}, json={
        "client_id": "acme", "payment_method_id": method["id"], "amount_minor": 8_000})
    assert paid.status_code == 201, paid.text
    payment_id = paid.json()["id"]

    refund = await payments.post(f"/v1/payments/{payment_id}/refunds", headers={**headers, "Idempotency-Key": "r1"},
                                 json={"amount_minor": 1_500, "reason": "requested_by_customer"})
    assert refund.status_code == 201, refund.text
    enrolled = await payments.put("/v1/clients/acme/autopay", headers=headers,
                                  json={"payment_method_id": method["id"], "rule": "on_due"})
    assert enrolled.status_code == 200, enrolled.text
    assert (await payments.delete("/v1/clients/acme/autopay", headers=headers)).status_code == 204
    # Cancelling what is already cancelled changes nothing, so it records nothing.
    assert (await payments.delete("/v1/clients/acme/autopay", headers=headers)).status_code == 204
    await payments.put("/v1/clients/acme/autopay", headers=headers,
                       json={"payment_method_id": method["id"], "rule": "on_due"})
    removed = await payments.delete(f"/v1/clients/acme/payment-methods/{method['id']}", headers=headers)
    assert removed.status_code == 204, removed.text

    methods = (await payments.get("/v1/clients/acme/payment-methods", headers=headers)).json()
    assert [m["status"] for m in methods] == ["detached"]
    autopay = (await payments.get("/v1/clients/acme/autopay", headers=headers)).json()
    assert autopay["active"] is False
    # Stripe forgot it too: a detached PaymentMethod has no customer.
    async with payments.app.state.session_factory() as session:
        stripe_id = await session.scalar(text("SELECT stripe_payment_method_id FROM payment_methods"
                                              " WHERE id = :id"), {"id": method["id"]})
    at_stripe = await gateway_of(payments.app)._client.v1.payment_methods.retrieve_async(stripe_id)
    assert at_stripe.customer is None

    entries = await kit.outbox_events(payments, "audit.recorded", "t-audit")
    assert [(e["data"]["action"], e["data"]["target"]["type"], e["data"]["target"]["id"]) for e in entries] == [
        ("payment.refund_requested", "payment", payment_id),
        ("autopay.enrolled", "client", "acme"),
        ("autopay.cancelled", "client", "acme"),
        ("autopay.enrolled", "client", "acme"),
        ("payment_method.detached", "payment_method", method["id"]),
    ]
    assert {e["data"]["actor"]["subject"] for e in entries} == {subject(headers)}
    assert all(e["producer"] == "payments" and e["client_id"] == "acme" for e in entries)
    assert entries[0]["data"]["details"]["amount_minor"] == 1_500
    assert entries[-1]["data"]["details"]["last4"] == "4242"
    # The bearer token and the Stripe key never reach the audit trail.
    raw = str(entries)
    assert headers["Authorization"].removeprefix("Bearer ") not in raw
    assert payments_settings().api_key() not in raw


async def test_removing_another_clients_method_is_refused_and_not_audited(payments, token, kit):
    headers = token("t-audit2", "payments:write", "ar:read")
    await kit.seed_tenant(payments, "t-audit2")
    await kit.seed_client(payments, "t-audit2", "one")
    await kit.seed_client(payments, "t-audit2", "two")
    method = await kit.save_card(payments, headers, "one")
    wrong = await payments.delete(f"/v1/clients/two/payment-methods/{method['id']}", headers=headers)
    assert wrong.status_code == 404
    assert await kit.outbox_events(payments, "audit.recorded", "t-audit2") == []
    assert [m["status"] for m in (await payments.get("/v1/clients/one/payment-methods", headers=headers)).json()] \
        == ["active"]
