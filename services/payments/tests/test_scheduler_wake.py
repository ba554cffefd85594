"""An enrolment starts the scheduler's next pass: invoices already due are charged then, not at the
scheduler's next interval (here an hour, so only the wake can charge them within the test)."""
import asyncio
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

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

