"""The Stripe sandbox against Stripe's published formats and its own promises: what it makes carries
every field of Stripe's example objects (specs/stripe/fixtures3.json), declines look like Stripe's
card errors, and a request over the rate limit is refused before it has any effect."""
import asyncio
import json

import httpx

from payloop.simulators.stripe_sandbox import StripeSandbox
from payloop.testing.plugin import REPO_ROOT

EXAMPLES = json.loads((REPO_ROOT / "specs" / "stripe" / "fixtures3.json").read_text())["resources"]
KEY = {"Authorization": "Bearer sk_test_sandbox"}


async def test_ach_objects_carry_every_field_of_stripes_examples(stripe_sandbox):
    async with httpx.AsyncClient(base_url=stripe_sandbox.url, headers=KEY) as stripe:
        customer = (await stripe.post("/v1/customers", data={"name": "Acme"})).json()["id"]  # localstripe's
        setup = (await stripe.post("/v1/setup_intents", data={
            "customer": customer, "payment_method_types[0]": "us_bank_account"})).json()
        setup = (await stripe.post(f"/v1/setup_intents/{setup['id']}/confirm", data={
            "payment_method": "pm_usBankAccount_success",
            "mandate_data[customer_acceptance][type]": "offline"})).json()
        method = (await stripe.get(f"/v1/payment_methods/{setup['payment_method']}")).json()
        mandate = (await stripe.get(f"/v1/mandates/{setup['mandate']}")).json()
        intent = (await stripe.post("/v1/payment_intents", data={
            "amount": "2500", "currency": "usd", "customer": customer, "payment_method": method["id"],
            "confirm": "true", "payment_method_types[0]": "us_bank_account"})).json()
        assert intent["status"] == "processing"
        await stripe_sandbox.advance(days=4)
        intent = (await stripe.get(f"/v1/payment_intents/{intent['id']}")).json()
        charge = (await stripe.get(f"/v1/charges/{intent['latest_charge']}")).json()
        txn = (await stripe.get(f"/v1/balance_transactions/{charge['balance_transaction']}")).json()
        # Without a secret key the sandbox answers for its objects as Stripe does.
        assert (await stripe.get(f"/v1/charges/{charge['id']}", headers={"Authorization": ""})).status_code == 401

    made = {"setup_intent": setup, "payment_method": method, "mandate": mandate, "payment_intent": intent,
            "charge": charge, "balance_transaction": txn}
    for kind, obj in made.items():
        assert obj["object"] == kind
        # `card` is the example's own method type; ours are bank accounts.
        assert set(EXAMPLES[kind]) - {"card"} <= set(obj), (kind, set(EXAMPLES[kind]) - set(obj))
    assert (setup["status"], intent["status"], charge["status"]) == ("succeeded", "succeeded", "succeeded")
    assert (txn["amount"], txn["fee"], txn["net"]) == (2500, 20, 2480)  # 0.8%
    assert method["us_bank_account"]["last4"] == "6789" and method["us_bank_account"]["routing_number"] == "110000000"


async def test_a_declined_card_answers_as_stripe_does(stripe_sandbox):
    async with httpx.AsyncClient(base_url=stripe_sandbox.url, headers=KEY) as stripe:
        customer = (await stripe.post("/v1/customers", data={"name": "Acme"})).json()["id"]
        setup = (await stripe.post("/v1/setup_intents", data={
            "customer": customer, "payment_method_types[0]": "card"})).json()
        refused = await stripe.post(f"/v1/setup_intents/{setup['id']}/confirm",
                                    data={"payment_method": "pm_card_visa_chargeDeclinedLostCard"})
        assert refused.status_code == 402  # Stripe's declining test cards cannot be saved
        assert (refused.json()["error"]["type"], refused.json()["error"]["decline_code"]) == ("card_error", "lost_card")
        charged = await stripe.post("/v1/payment_intents", data={
            "amount": "900", "currency": "usd", "customer": customer, "confirm": "true",
            "payment_method": "pm_card_chargeDeclinedExpiredCard"})
    error = charged.json()["error"]
    assert charged.status_code == 402
    assert (error["type"], error["code"], "decline_code" in error) == ("card_error", "expired_card", False)
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert error["payment_intent"]["last_payment_error"]["code"] == "expired_card"
    assert error["charge"].startswith("ch_")


async def test_over_the_rate_limit_nothing_happens(localstripe):
    sandbox = await StripeSandbox(localstripe, rate_limit=3).start()
    try:
        async with httpx.AsyncClient(base_url=sandbox.url, headers=KEY) as stripe:
            answers = [await stripe.get("/v1/balance_transactions") for _ in range(3)]
            assert [a.status_code for a in answers] == [200, 200, 200]
            made_before = len(sandbox.objects)
            debit = {"amount": "900", "currency": "usd", "confirm": "true",
                     "payment_method": "pm_usBankAccount_success"}
            limited = await stripe.post("/v1/payment_intents", data=debit)
            assert limited.status_code == 429
            assert limited.json()["error"]["code"] == "rate_limit"
            assert len(sandbox.objects) == made_before  # refused before anything was made
            await asyncio.sleep(0.5)  # the bucket refills at 3 per second
            allowed = await stripe.post("/v1/payment_intents", data=debit)
            assert allowed.status_code == 200 and allowed.json()["status"] == "processing"
            # The test controls are never limited.
            assert [(await stripe.get("/_sim/clock")).status_code for _ in range(10)] == [200] * 10
    finally:
        await sandbox.stop()


async def test_an_idempotency_key_gets_its_first_answer_even_from_localstripe(stripe_sandbox):
    async with httpx.AsyncClient(base_url=stripe_sandbox.url, headers=KEY) as stripe:
        customer = (await stripe.post("/v1/customers", data={"name": "Acme"})).json()["id"]
        charge = {"amount": "900", "currency": "usd", "customer": customer, "confirm": "true",
                  "payment_method": "pm_card_visa", "off_session": "true"}
        key = {"Idempotency-Key": "attempt-1"}
        first = await stripe.post("/v1/payment_intents", data=charge, headers=key)
        again = await stripe.post("/v1/payment_intents", data=charge, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
        other = await stripe.post("/v1/payment_intents", data={**charge, "amount": "901"}, headers=key)
        assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
        # Without a key, or with another, each request is its own.
        fresh = await stripe.post("/v1/payment_intents", data=charge, headers={"Idempotency-Key": "attempt-2"})
        assert fresh.json()["id"] != first.json()["id"]


async def test_on_a_faster_calendar_ach_debits_settle_by_themselves(localstripe):
    sandbox = await StripeSandbox(localstripe, speed=400_000).start()  # four banking days in about a second
    try:
        async with httpx.AsyncClient(base_url=sandbox.url, headers=KEY) as stripe:
            debit = await stripe.post("/v1/payment_intents", data={
                "amount": "900", "currency": "usd", "confirm": "true", "payment_method": "pm_usBankAccount_success"})
            assert debit.json()["status"] == "processing"
            for _ in range(100):
                intent = (await stripe.get(f"/v1/payment_intents/{debit.json()['id']}")).json()
                if intent["status"] != "processing":
                    break
                await asyncio.sleep(0.1)
        assert intent["status"] == "succeeded"
    finally:
        await sandbox.stop()
