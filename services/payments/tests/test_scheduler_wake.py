"""An enrolment starts the scheduler's next pass: invoices already due are charged then, not at the
scheduler's next interval (here an hour, so only the wake can charge them within the test)."""
import asyncio
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from payloop_payments import scheduler
from payloop_payments.settings import payments_settings


async def test_enrolling_a_client_charges_its_due_invoices_without_waiting_for_the_interval(
        payments, token, kit, monkeypatch):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    admin = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant)
    await kit.seed_client(payments, tenant, "acme")
    method = await kit.save_card(payments, admin, "acme")
    yesterday = datetime.now(ZoneInfo("America/New_York")).date() - timedelta(days=1)
    await kit.seed_invoice(payments, tenant, "acme", "overdue", 7_500, due=yesterday)

    monkeypatch.setenv("PAYLOOP_PAYMENTS_RUN_SCHEDULER", "true")
    monkeypatch.setenv("PAYLOOP_PAYMENTS_SCHEDULER_INTERVAL_S", "3600")
    payments_settings.cache_clear()
    stop = asyncio.Event()
    loop = asyncio.create_task(scheduler.scheduler_loop(payments.app, stop))
    try:
        await asyncio.sleep(0.5)  # the first pass: nobody enrolled, so nothing due; then an hour's wait
        assert await kit.outbox_events(payments, "payment.initiated", tenant) == []

        enrolled = await payments.put("/v1/clients/acme/autopay", headers=admin,
                                      json={"payment_method_id": method["id"], "rule": "on_due"})
        assert enrolled.status_code == 200, enrolled.text
        for _ in range(200):
            if await kit.outbox_events(payments, "payment.settled", tenant):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await loop
        monkeypatch.undo()
        payments_settings.cache_clear()
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert [e["data"]["allocations"] for e in settled] == [[{"invoice_id": "overdue", "amount_minor": 7_500}]]
