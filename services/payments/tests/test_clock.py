"""The payments clock: moved through the API outside production, it is the scheduler's and the API's
now, so tests and `payloop dev --speed N` reach due dates and retries without waiting."""
import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from payloop.settings import platform_settings


async def test_moving_the_clock_moves_the_scheduler_and_the_api(payments, token, kit, monkeypatch):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    admin, writer = token(tenant, "admin"), token(tenant, "payments:write", "ar:read")
    await kit.seed_tenant(payments, tenant)
    await kit.seed_client(payments, tenant, "acme")
    method = await kit.save_card(payments, admin, "acme")
    await payments.put("/v1/clients/acme/autopay", headers=admin,
                       json={"payment_method_id": method["id"], "rule": "on_due"})
    due = datetime.now(ZoneInfo("America/New_York")).date() + timedelta(days=10)
    await kit.seed_invoice(payments, tenant, "acme", "later", 5_000, due=due)

    async with kit.running_scheduler(payments, monkeypatch, interval_s=0.05):
        await asyncio.sleep(0.3)  # a few passes on today's date: not due yet
        assert await kit.outbox_events(payments, "payment.initiated", tenant) == []

        assert (await payments.put("/v1/payments/clock", headers=writer,
                                   json={"advance_seconds": 86_400})).status_code == 403
        moved = await payments.put("/v1/payments/clock", headers=admin, json={"advance_seconds": 10 * 86_400})
        assert moved.status_code == 200, moved.text
        assert moved.json()["settable"] is True
        assert datetime.fromisoformat(moved.json()["now"]) - datetime.now(UTC) > timedelta(days=9, hours=23)
        await kit.settled_events(payments, tenant)
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert [e["data"]["allocations"] for e in settled] == [[{"invoice_id": "later", "amount_minor": 5_000}]]
    # The API takes the same now: a plan's first part falls on the moved date, not today's.
    await kit.seed_invoice(payments, tenant, "acme", "plan-me", 9_000, due=due + timedelta(days=30))
    plan = await payments.post("/v1/clients/acme/installment-plans", headers=admin, json={
        "invoice_id": "plan-me", "payment_method_id": method["id"], "parts": 3, "every_days": 30})
    assert plan.status_code == 201, plan.text
    assert plan.json()["parts"][0]["due_on"] == due.isoformat()
    clock = (await payments.get("/v1/payments/clock", headers=writer)).json()
    assert datetime.fromisoformat(clock["now"]).date() >= due - timedelta(days=1)


async def test_the_clock_cannot_move_in_production_nor_by_an_unknown_tenant(payments, token, kit, monkeypatch):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    admin = token(tenant, "admin")
    assert (await payments.put("/v1/payments/clock", headers=admin, json={"advance_seconds": 60})).status_code == 404
    await kit.seed_tenant(payments, tenant)
    monkeypatch.setenv("PAYLOOP_ENV", "prod")
    platform_settings.cache_clear()
    try:
        answer = await payments.put("/v1/payments/clock", headers=admin, json={"advance_seconds": 60})
    finally:
        monkeypatch.undo()
        platform_settings.cache_clear()
    assert answer.status_code == 409
    assert answer.headers["content-type"].startswith("application/problem+json")
