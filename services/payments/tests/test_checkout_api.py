"""The checkout's JSON calls without a browser: one payment per Idempotency-Key under concurrent
double submits, a declined card is not retried (client-initiated), links are checked on every call,
a flood of calls on one link is rate-limited, an installment plan chosen at checkout, and the
tenant's card convenience fee (quoted, charged on top, allocated to no invoice, never on ACH)."""
import asyncio
import uuid
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import httpx

from payloop.checkout_links import mint_checkout_token

from payloop_payments import scheduler
from payloop_payments.api import clock_of, gateway_of


async def confirmed_setup(client, link: str, card: str = "pm_card_visa", **options) -> str:
    """What Stripe.js does on the page: create the SetupIntent through the link, confirm it."""
    setup = await client.post(f"/checkout/{link}/setup-intents", json=options)
    assert setup.status_code == 201, setup.text
    await gateway_of(client.app).confirm_setup_intent(setup.json()["setup_intent_id"], card, None)
    return setup.json()["setup_intent_id"]


async def test_double_submit_pays_once_and_autopay_enrolment(payments, token, kit):
    headers = token("t-dbl", "admin")
    await kit.seed_tenant(payments, "t-dbl")
    await kit.seed_client(payments, "t-dbl", "acme")
    await kit.seed_invoice(payments, "t-dbl", "acme", "d-1", 30_000, due=date.today())
    link = mint_checkout_token("t-dbl", "acme", ["d-1"])
    intent = await confirmed_setup(payments, link, autopay=True)
    body = {"setup_intent_id": intent, "autopay": True, "allocations": [{"invoice_id": "d-1", "amount_minor": 30_000}]}
    submit = {"json": body, "headers": {"Idempotency-Key": "page-nonce-0001"}}

    first, second = await asyncio.gather(payments.post(f"/checkout/{link}/payments", **submit),
                                         payments.post(f"/checkout/{link}/payments", **submit))
    assert first.status_code == second.status_code == 201, second.text[:300]
    assert first.json()["payment_id"] == second.json()["payment_id"]
    # The submit that lost the race answers at once with the payment as it then was (maybe still pending);
    # the winner's answer, and the payment itself, are settled.
    assert "succeeded" in {first.json()["status"], second.json()["status"]}
    paid = await payments.get(f"/v1/payments/{first.json()['payment_id']}", headers=headers)
    assert paid.json()["status"] == "succeeded"
    assert len(await kit.outbox_events(payments, "payment.initiated", "t-dbl")) == 1
    assert len(await kit.outbox_events(payments, "payment.settled", "t-dbl")) == 1
    # The payer chose auto-pay: the saved card now pays future invoices on their due date.
    autopay = (await payments.get("/v1/clients/acme/autopay", headers=headers)).json()
    assert autopay["active"] is True and autopay["rule"] == "on_due"
    methods = (await payments.get("/v1/clients/acme/payment-methods", headers=headers)).json()
    assert [(m["id"], m["status"]) for m in methods] == [(autopay["payment_method_id"], "active")]


async def test_declined_card_is_reported_and_not_retried(payments, token, kit):
    headers = token("t-dcl", "admin")
    await kit.seed_tenant(payments, "t-dcl")
    await kit.seed_client(payments, "t-dcl", "dud")
    await kit.seed_invoice(payments, "t-dcl", "dud", "x-1", 4_000, due=date.today())
    link = mint_checkout_token("t-dcl", "dud", [])
    intent = await confirmed_setup(payments, link, card="pm_card_chargeCustomerFail")
    paid = await payments.post(f"/checkout/{link}/payments", headers={"Idempotency-Key": "nonce-declined-1"},
                               json={"setup_intent_id": intent, "allocations": [{"invoice_id": "x-1", "amount_minor": 4_000}]})
    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "failed" and "declined" in paid.json()["message"]
    failed = await kit.outbox_events(payments, "payment.failed", "t-dcl")
    assert len(failed) == 1 and failed[0]["data"]["retryable"] is False  # the payer retries, not the scheduler
    invoices = (await payments.get("/v1/clients/dud/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 4_000


async def test_links_are_checked_on_every_call(payments, token, kit):
    await kit.seed_tenant(payments, "t-lnk")
    await kit.seed_client(payments, "t-lnk", "ivy")
    await kit.seed_client(payments, "t-lnk", "oak")
    await kit.seed_invoice(payments, "t-lnk", "ivy", "i-1", 1_000, due=date.today())
    await kit.seed_invoice(payments, "t-lnk", "ivy", "i-2", 2_000, due=date.today())
    await kit.seed_invoice(payments, "t-lnk", "oak", "o-1", 3_000, due=date.today())
    only_i1 = mint_checkout_token("t-lnk", "ivy", ["i-1"])
    expired = mint_checkout_token("t-lnk", "ivy", [], ttl=timedelta(seconds=-1))
    body, signature = only_i1.split(".")
    forged = f"{body}.{signature[::-1]}"

    assert (await payments.post(f"/checkout/{forged}/setup-intents", json={})).status_code == 401
    assert (await payments.post(f"/checkout/{expired}/setup-intents", json={})).status_code == 410
    page = await payments.get(f"/checkout/{only_i1}")
    assert page.status_code == 200 and 'data-invoice="i-1"' in page.text and "i-2" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer"

    intent = await confirmed_setup(payments, only_i1)
    for invoice_id in ("i-2", "o-1"):  # not in the link; another client's
        refused = await payments.post(f"/checkout/{only_i1}/payments", headers={"Idempotency-Key": f"nonce-{invoice_id}-x"},
                                      json={"setup_intent_id": intent,
                                            "allocations": [{"invoice_id": invoice_id, "amount_minor": 500}]})
        assert refused.status_code == 422, refused.text
    paid = await payments.post(f"/checkout/{only_i1}/payments", headers={"Idempotency-Key": "nonce-i1-ok"},
                               json={"setup_intent_id": intent, "allocations": [{"invoice_id": "i-1", "amount_minor": 1_000}]})
    assert paid.status_code == 201, paid.text
    receipt = paid.json()["receipt_url"]
    assert (await payments.get(receipt)).status_code == 200
    # Another client's link cannot open this receipt.
    oak_link = mint_checkout_token("t-lnk", "oak", [])
    assert (await payments.get(receipt.replace(only_i1, oak_link))).status_code == 404


async def test_a_flood_on_one_link_is_rate_limited(payments, kit):
    link = mint_checkout_token("t-flood", "nobody", [])
    answers = [(await payments.post(f"/checkout/{link}/payments", json={})).status_code for _ in range(12)]
    assert answers[:10] == [422] * 10  # invalid requests still spend the link's budget
    assert answers[10:] == [429, 429]


async def test_only_the_clients_own_saved_bank_account_can_pay(payments, token, kit):
    headers = token("t-own", "admin")
    await kit.seed_tenant(payments, "t-own")
    for client_id in ("acme", "other"):
        await kit.seed_client(payments, "t-own", client_id)
    await kit.seed_invoice(payments, "t-own", "acme", "o-1", 5_000, due=date.today())
    others = await kit.save_bank_account(payments, headers, "other")
    link = mint_checkout_token("t-own", "acme", [])
    body = {"payment_method_id": others["id"], "allocations": [{"invoice_id": "o-1", "amount_minor": 5_000}]}
    refused = await payments.post(f"/checkout/{link}/payments", json=body, headers={"Idempotency-Key": "nonce-other-1"})
    assert refused.status_code == 422, refused.text
    both = await payments.post(f"/checkout/{link}/payments", headers={"Idempotency-Key": "nonce-both-1"},
                               json={**body, "setup_intent_id": "seti_x"})
    assert both.status_code == 422
    assert await kit.outbox_events(payments, "payment.initiated", "t-own") == []


async def test_an_installment_plan_chosen_at_checkout(payments, token, kit):
    """The payer sees the schedule, confirms it once (a double submit makes one plan and one first
    charge), the first part is charged at once and the scheduler charges the rest on their days."""
    tenant = f"t-plan-{uuid.uuid4().hex[:8]}"
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant)
    await kit.seed_client(payments, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "big-1", 100_001, due=date.today())
    link = mint_checkout_token(tenant, "acme", [])
    # The plan is dated in the tenant's day (seed_tenant: New York), not UTC's: they differ before 05:00 UTC.
    today = clock_of(payments.app).now().astimezone(ZoneInfo("America/New_York")).date()

    quote = await payments.get(f"/checkout/{link}/installment-quote", params={"invoice_id": "big-1", "parts": 3})
    assert quote.status_code == 200, quote.text
    days = [today + timedelta(days=30 * i) for i in range(3)]
    expected = [(1, days[0].isoformat(), 33_334), (2, days[1].isoformat(), 33_334), (3, days[2].isoformat(), 33_333)]
    assert quote.json()["total_minor"] == 100_001
    assert [(p["seq"], p["due_on"], p["amount_minor"]) for p in quote.json()["parts"]] == expected
    for refused in ({"invoice_id": "big-1", "parts": 5}, {"invoice_id": "elsewhere", "parts": 2}):
        assert (await payments.get(f"/checkout/{link}/installment-quote", params=refused)).status_code == 422

    intent = await confirmed_setup(payments, link)
    submit = {"json": {"setup_intent_id": intent, "invoice_id": "big-1", "parts": 3},
              "headers": {"Idempotency-Key": "plan-nonce-0001"}}
    first, second = await asyncio.gather(payments.post(f"/checkout/{link}/installment-plans", **submit),
                                         payments.post(f"/checkout/{link}/installment-plans", **submit))
    assert first.status_code == second.status_code == 201, (first.text[:300], second.text[:300])
    plan = first.json()
    assert second.json()["plan_id"] == plan["plan_id"] and plan["status"] == "active"
    assert second.json()["first_payment"]["payment_id"] == plan["first_payment"]["payment_id"]
    assert [(p["seq"], p["due_on"], p["amount_minor"]) for p in plan["parts"]] == expected
    assert len(await kit.outbox_events(payments, "installment_plan.created", tenant)) == 1
    initiated = await kit.outbox_events(payments, "payment.initiated", tenant)
    assert [(e["data"]["amount_minor"], e["data"]["origin"]) for e in initiated] == [(33_334, "installment")]
    invoices = (await payments.get("/v1/clients/acme/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 100_001 - 33_334
    shown = (await payments.get(f"/v1/installment-plans/{plan['plan_id']}", headers=headers)).json()
    assert [p["status"] for p in shown["parts"]] == ["succeeded", "scheduled", "scheduled"]
    # The plan keeps the card; the scheduler charges the second part on its day, not before.
    now = kit.utc(today.year, today.month, today.day)
    factory, gateway = payments.app.state.session_factory, payments.app.state.gateway
    assert await scheduler.run_once(factory, gateway, now=now) == 0
    assert await scheduler.run_once(factory, gateway, now=now + timedelta(days=30)) == 1
    shown = (await payments.get(f"/v1/installment-plans/{plan['plan_id']}", headers=headers)).json()
    assert [p["status"] for p in shown["parts"]] == ["succeeded", "succeeded", "scheduled"]


async def test_a_declined_first_part_cancels_the_checkout_plan(payments, token, kit):
    tenant = f"t-pland-{uuid.uuid4().hex[:8]}"
    await kit.seed_tenant(payments, tenant)
    await kit.seed_client(payments, tenant, "dud")
    await kit.seed_invoice(payments, tenant, "dud", "x-1", 9_000, due=date.today())
    link = mint_checkout_token(tenant, "dud", [])
    declined = await payments.post(
        f"/checkout/{link}/installment-plans", headers={"Idempotency-Key": "plan-declined-1"},
        json={"setup_intent_id": await confirmed_setup(payments, link, card="pm_card_chargeCustomerFail"),
              "invoice_id": "x-1", "parts": 2})
    assert declined.status_code == 201, declined.text
    assert declined.json()["status"] == "cancelled" and declined.json()["first_payment"]["status"] == "failed"
    # The payer tries another card: a new plan for the same invoice is accepted.
    again = await payments.post(
        f"/checkout/{link}/installment-plans", headers={"Idempotency-Key": "plan-declined-2"},
        json={"setup_intent_id": await confirmed_setup(payments, link), "invoice_id": "x-1", "parts": 2})
    assert again.status_code == 201, again.text
    assert again.json()["status"] == "active" and again.json()["first_payment"]["amount_minor"] == 4_500


async def test_a_card_convenience_fee_is_quoted_charged_on_top_and_allocated_to_no_invoice(payments, token, kit,
                                                                                           stripe_sandbox):
    tenant = f"t-fee-{uuid.uuid4().hex[:8]}"
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant, convenience_fee={"card_basis_points": 250, "ach_fixed_minor": 0})
    await kit.seed_client(payments, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "f-1", 6_000, due=date.today())
    await kit.seed_invoice(payments, tenant, "acme", "f-2", 4_020, due=date.today())
    link = mint_checkout_token(tenant, "acme", [])
    page = await payments.get(f"/checkout/{link}")
    assert 'data-card-fee-bps="250"' in page.text and "Card convenience fee (2.50 %)" in page.text

    # 10,020 x 2.5 % = 250.50 exactly: half a cent rounds up.
    quote = (await payments.get(f"/checkout/{link}/card-fee", params={"amount_minor": 10_020})).json()
    assert quote == {"amount_minor": 10_020, "card_basis_points": 250, "card_fee_minor": 251, "card_total_minor": 10_271}
    below_half = (await payments.get(f"/checkout/{link}/card-fee", params={"amount_minor": 10_019})).json()
    assert below_half["card_fee_minor"] == 250  # 250.475

    body = {"setup_intent_id": await confirmed_setup(payments, link),
            "allocations": [{"invoice_id": "f-1", "amount_minor": 6_000}, {"invoice_id": "f-2", "amount_minor": 4_020}]}
    unseen = await payments.post(f"/checkout/{link}/payments", json=body, headers={"Idempotency-Key": "fee-nonce-01"})
    assert unseen.status_code == 409, unseen.text  # a fee the payer was not shown is never charged
    paid = await payments.post(f"/checkout/{link}/payments", json={**body, "card_fee_minor": 251},
                               headers={"Idempotency-Key": "fee-nonce-02"})
    assert paid.status_code == 201, paid.text
    assert (paid.json()["status"], paid.json()["amount_minor"], paid.json()["card_fee_minor"]) == ("succeeded", 10_020, 251)

    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert len(settled) == 1
    data = settled[0]["data"]
    assert (data["amount_minor"], data["surcharge_minor"], data["credit_minor"]) == (10_020, 251, 0)
    assert data["allocations"] == [{"invoice_id": "f-1", "amount_minor": 6_000}, {"invoice_id": "f-2", "amount_minor": 4_020}]
    async with httpx.AsyncClient(base_url=stripe_sandbox.url, headers={"Authorization": "Bearer sk_test_sandbox"}) as api:
        intent = (await api.get(f"/v1/payment_intents/{data['processor']['payment_intent_id']}")).json()
    assert intent["amount"] == 10_271  # invoices + fee
    invoices = (await payments.get("/v1/clients/acme/invoices", headers=headers)).json()
    assert {i["invoice_id"]: i["open_minor"] for i in invoices} == {"f-1": 0, "f-2": 0}
    assert "Of which card convenience fee" in (await payments.get(paid.json()["receipt_url"])).text


async def test_a_bank_account_never_pays_the_card_fee(payments, token, kit):
    tenant = f"t-feeach-{uuid.uuid4().hex[:8]}"
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant, convenience_fee={"card_basis_points": 300, "ach_fixed_minor": 0})
    await kit.seed_client(payments, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "a-1", 50_000, due=date.today())
    account = await kit.save_bank_account(payments, headers, "acme")
    link = mint_checkout_token(tenant, "acme", [])
    body = {"payment_method_id": account["id"], "allocations": [{"invoice_id": "a-1", "amount_minor": 50_000}]}
    charged_a_fee = await payments.post(f"/checkout/{link}/payments", json={**body, "card_fee_minor": 1_500},
                                        headers={"Idempotency-Key": "ach-fee-nonce-1"})
    assert charged_a_fee.status_code == 409
    paid = await payments.post(f"/checkout/{link}/payments", json=body, headers={"Idempotency-Key": "ach-fee-nonce-2"})
    assert paid.status_code == 201, paid.text
    assert (paid.json()["amount_minor"], paid.json()["card_fee_minor"]) == (50_000, 0)
    initiated = await kit.outbox_events(payments, "payment.initiated", tenant)
    assert [(e["data"]["amount_minor"], e["data"]["surcharge_minor"]) for e in initiated] == [(50_000, 0)]
