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
