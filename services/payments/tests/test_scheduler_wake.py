"""An enrolment, through the API or ticked at checkout, starts the scheduler's next pass: invoices
already due are charged then, not at the scheduler's next interval (here an hour, so only the wake can
charge them within the test)."""
import asyncio
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from payloop.checkout_links import mint_checkout_token

from payloop_payments.api import gateway_of

AN_HOUR = 3600


def yesterday():
    return datetime.now(ZoneInfo("America/New_York")).date() - timedelta(days=1)


async def test_enrolling_a_client_charges_its_due_invoices_without_waiting_for_the_interval(
        payments, token, kit, monkeypatch):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    admin = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant)
    await kit.seed_client(payments, tenant, "acme")
    method = await kit.save_card(payments, admin, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "overdue", 7_500, due=yesterday())

    async with kit.running_scheduler(payments, monkeypatch, interval_s=AN_HOUR):
        await asyncio.sleep(0.5)  # the first pass: nobody enrolled, so nothing due; then an hour's wait
        assert await kit.outbox_events(payments, "payment.initiated", tenant) == []

        enrolled = await payments.put("/v1/clients/acme/autopay", headers=admin,
                                      json={"payment_method_id": method["id"], "rule": "on_due"})
        assert enrolled.status_code == 200, enrolled.text
        settled = await kit.settled_events(payments, tenant)
    assert [e["data"]["allocations"] for e in settled] == [[{"invoice_id": "overdue", "amount_minor": 7_500}]]


async def test_auto_pay_chosen_at_checkout_charges_the_clients_other_due_invoices_at_once(
        payments, token, kit, monkeypatch):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    await kit.seed_tenant(payments, tenant)
    await kit.seed_client(payments, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "paid-at-checkout", 3_000, due=yesterday())
    await kit.seed_invoice(payments, tenant, "acme", "also-due", 4_500, due=yesterday())
    link = mint_checkout_token(tenant, "acme", ["paid-at-checkout"])

    async with kit.running_scheduler(payments, monkeypatch, interval_s=AN_HOUR):
        await asyncio.sleep(0.5)  # the first pass: nobody enrolled; then an hour's wait
        setup = await payments.post(f"/checkout/{link}/setup-intents", json={"autopay": True})
        assert setup.status_code == 201, setup.text
        await gateway_of(payments.app).confirm_setup_intent(setup.json()["setup_intent_id"], "pm_card_visa", None)
        paid = await payments.post(f"/checkout/{link}/payments", headers={"Idempotency-Key": "page-nonce-wake1"},
                                   json={"setup_intent_id": setup.json()["setup_intent_id"], "autopay": True,
                                         "allocations": [{"invoice_id": "paid-at-checkout", "amount_minor": 3_000}]})
        assert paid.status_code == 201, paid.text
        for _ in range(200):
            settled = await kit.outbox_events(payments, "payment.settled", tenant)
            if len(settled) == 2:
                break
            await asyncio.sleep(0.05)
    assert sorted(a["invoice_id"] for e in settled for a in e["data"]["allocations"]) == [
        "also-due", "paid-at-checkout"]
    assert {e["data"]["origin"] for e in await kit.outbox_events(payments, "payment.initiated", tenant)} == {
        "checkout", "autopay"}
