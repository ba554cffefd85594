"""Installment plans: the balance split exactly, `installment_plan.created`, parts charged by the
scheduler on their days (never the whole invoice by auto-pay), a failed part retried by policy."""
from datetime import date, timedelta

from payloop_payments import scheduler


async def run(client, now):
    return await scheduler.run_once(client.app.state.session_factory, client.app.state.gateway, now=now)


async def test_plan_parts_are_charged_on_their_days(payments, token, kit):
    headers = token("t-inst", "admin")
    await kit.seed_tenant(payments, "t-inst")
    await kit.seed_client(payments, "t-inst", "acme")
    await kit.seed_invoice(payments, "t-inst", "acme", "big-1", 100_001, due=date(2026, 3, 1))
    method = await kit.save_card(payments, headers, "acme")
    # Auto-pay would charge the whole invoice on its due date; the plan takes precedence.
    await payments.put("/v1/clients/acme/autopay", headers=headers,
                       json={"payment_method_id": method["id"], "rule": "on_due"})
    body = {"invoice_id": "big-1", "payment_method_id": method["id"], "parts": 3,
            "first_due_on": "2026-03-01", "every_days": 30}
    created = await payments.post("/v1/clients/acme/installment-plans", json=body,
                                  headers={**headers, "Idempotency-Key": "plan-1"})
    assert created.status_code == 201, created.text
    plan = created.json()
    assert [(p["due_on"], p["amount_minor"], p["status"]) for p in plan["parts"]] == [
        ("2026-03-01", 33_334, "scheduled"), ("2026-03-31", 33_334, "scheduled"), ("2026-04-30", 33_333, "scheduled")]
    again = await payments.post("/v1/clients/acme/installment-plans", json=body,
                                headers={**headers, "Idempotency-Key": "plan-1"})
    assert again.json()["id"] == plan["id"]
    second = await payments.post("/v1/clients/acme/installment-plans", json=body, headers=headers)
    assert second.status_code == 409  # one active plan per invoice
    events = await kit.outbox_events(payments, "installment_plan.created", "t-inst")
    assert len(events) == 1
    assert events[0]["data"]["parts"] == [{"due_on": p["due_on"], "amount_minor": p["amount_minor"]}
                                          for p in plan["parts"]]

    assert await run(payments, kit.utc(2026, 2, 28)) == 0
    assert await run(payments, kit.utc(2026, 3, 1)) == 1  # the first part, not the whole invoice
    assert await run(payments, kit.utc(2026, 3, 2)) == 0
    assert await run(payments, kit.utc(2026, 3, 31)) == 1
    settled = await kit.outbox_events(payments, "payment.settled", "t-inst")
    assert [e["data"]["allocations"] for e in settled] == [[{"invoice_id": "big-1", "amount_minor": 33_334}]] * 2
    initiated = await kit.outbox_events(payments, "payment.initiated", "t-inst")
    assert {e["data"]["origin"] for e in initiated} == {"installment"}
    shown = (await payments.get(f"/v1/installment-plans/{plan['id']}", headers=headers)).json()
    assert [p["status"] for p in shown["parts"]] == ["succeeded", "succeeded", "scheduled"]
    invoices = (await payments.get("/v1/clients/acme/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 33_333
    assert await run(payments, kit.utc(2026, 4, 30)) == 1
    invoices = (await payments.get("/v1/clients/acme/invoices", headers=headers)).json()
    assert invoices[0]["open_minor"] == 0  # every cent, no more
    stranger = token("t-other", "admin")
    assert (await payments.get(f"/v1/installment-plans/{plan['id']}", headers=stranger)).status_code == 404


async def test_a_failed_part_follows_the_retry_policy(payments, token, kit):
    headers = token("t-instf", "admin")
    await kit.seed_tenant(payments, "t-instf")
    await kit.seed_client(payments, "t-instf", "dud")
    await kit.seed_invoice(payments, "t-instf", "dud", "f-1", 9_000, due=date(2026, 6, 1))
    method = await kit.save_card(payments, headers, "dud", card="pm_card_chargeCustomerFail")
    created = await payments.post("/v1/clients/dud/installment-plans", headers=headers, json={
        "invoice_id": "f-1", "payment_method_id": method["id"], "parts": 2, "first_due_on": "2026-06-01"})
    assert created.status_code == 201, created.text
    first_day = kit.utc(2026, 6, 1)
    assert await run(payments, first_day) == 1
    failed = await kit.outbox_events(payments, "payment.failed", "t-instf")
    assert len(failed) == 1 and failed[0]["data"]["retryable"] is True
    assert failed[0]["data"]["amount_minor"] == 4_500
    assert await run(payments, first_day + timedelta(hours=6)) == 0
    assert await run(payments, first_day + timedelta(days=1)) == 1  # day 1 of the default schedule
    failed = await kit.outbox_events(payments, "payment.failed", "t-instf")
    assert [e["data"]["attempt"] for e in failed] == [1, 2]
    plan = (await payments.get(f"/v1/installment-plans/{created.json()['id']}", headers=headers)).json()
    assert [p["status"] for p in plan["parts"]] == ["failed", "scheduled"]
