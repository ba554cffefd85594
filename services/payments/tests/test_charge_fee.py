"""The fee of a charge comes with the PaymentIntent's answer (its charge's balance transaction expanded):
no further request to Stripe. The answer is read as the JSON it came as (dicts). The gateway points at a
closed port, so any request would fail the test."""
import pytest

from payloop_payments.settings import PaymentsSettings
from payloop_payments.stripe_gateway import ProcessorUnavailable, StripeGateway


@pytest.fixture
async def gateway():
    gateway = StripeGateway(PaymentsSettings(env="dev", stripe_api_base="http://127.0.0.1:9", stripe_timeout_s=1))
    yield gateway
    await gateway.close()


async def test_the_fee_is_read_from_the_expanded_balance_transaction_without_a_request(gateway):
    charge = {"id": "ch_1", "object": "charge",
              "balance_transaction": {"id": "txn_1", "object": "balance_transaction", "fee": 317}}
    assert await gateway._fee_of_expanded(charge, "ch_1", None) == 317


async def test_a_charge_without_a_balance_transaction_has_no_fee_and_asks_nothing(gateway):
    charge = {"id": "ch_2", "object": "charge", "balance_transaction": None}
    assert await gateway._fee_of_expanded(charge, "ch_2", None) == 0


async def test_an_unexpanded_charge_is_asked_for(gateway):
    try:
        await gateway._fee_of_expanded("ch_3", "ch_3", None)
    except ProcessorUnavailable:
        return  # it asked Stripe (here: nobody listening), as it must when the answer was not expanded
    raise AssertionError("an unexpanded charge was not asked for")


async def test_an_intent_that_did_not_succeed_is_a_failure_with_its_decline(gateway):
    # Stripe answers 200 with the intent (not a card error) when it wants the payer, e.g. for 3-D Secure.
    intent = {"id": "pi_4", "object": "payment_intent", "status": "requires_action", "latest_charge": "ch_4",
              "last_payment_error": {"code": "authentication_required", "message": "Authenticate"}}
    result = await gateway._result_of(intent, None)
    assert (result.status, result.payment_intent_id, result.charge_id, result.decline_code, result.message) == (
        "failed", "pi_4", "ch_4", "authentication_required", "Authenticate")


async def test_a_charge_is_one_form_encoded_request_with_its_idempotency_key_and_account():
    """What Stripe receives (docs: Idempotency-Key and Stripe-Account headers, form-encoded body), from a
    local server standing in for api.stripe.com."""
    from aiohttp import web

    from payloop.embedded import free_port

    seen = []

    async def create_intent(request: web.Request) -> web.Response:
        seen.append((request.path, dict(request.headers), await request.post()))
        return web.json_response({
            "id": "pi_5", "object": "payment_intent", "status": "succeeded",
            "latest_charge": {"id": "ch_5", "object": "charge",
                              "balance_transaction": {"id": "txn_5", "object": "balance_transaction", "fee": 59}}})

    app = web.Application()
    app.router.add_post("/v1/payment_intents", create_intent)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    gateway = StripeGateway(PaymentsSettings(env="dev", stripe_api_base=f"http://127.0.0.1:{port}"))
    try:
        result = await gateway.charge(customer_id="cus_1", payment_method_id="pm_1", method_type="card",
                                      amount_minor=12_345, currency="USD", idempotency_key="autopay:inv-7",
                                      metadata={"tenant_id": "t-1"}, off_session=True, account="acct_9")
    finally:
        await gateway.close()
        await runner.cleanup()
    assert (result.status, result.payment_intent_id, result.charge_id, result.fee_minor) == (
        "succeeded", "pi_5", "ch_5", 59)
    [(path, headers, form)] = seen
    assert headers["Idempotency-Key"] == "autopay:inv-7" and headers["Stripe-Account"] == "acct_9"
    assert headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert {k: form[k] for k in ("amount", "currency", "customer", "payment_method", "confirm", "off_session",
                                 "metadata[tenant_id]", "payment_method_types[0]", "expand[0]")} == {
        "amount": "12345", "currency": "usd", "customer": "cus_1", "payment_method": "pm_1", "confirm": "true",
        "off_session": "true", "metadata[tenant_id]": "t-1", "payment_method_types[0]": "card",
        "expand[0]": "latest_charge.balance_transaction"}
    assert "idempotency_key" not in form and "stripe_account" not in form
