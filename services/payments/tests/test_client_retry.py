"""A client's "retry now" on a failed auto-pay charge: it is not a dunning retry (no budget used, the
schedule goes on when it fails), a double click retries once, and a new card can pay it."""
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from payloop_payments import scheduler
from payloop_payments.models import PaymentMethod


async def run(client, now):
    return await scheduler.run_once(client.app.state.session_factory, client.app.state.gateway, now=now)


async def test_client_retry_is_not_a_dunning_retry(payments, stripe_webhooks, token, kit):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant)
    await kit.seed_client(payments, tenant, "acme")
    card = await kit.save_card(payments, headers, "acme")
    await payments.put("/v1/clients/acme/autopay", headers=headers,
                       json={"payment_method_id": card["id"], "rule": "on_due"})
    await kit.seed_invoice(payments, tenant, "acme", "inv-1", 8_800,
                           due=datetime.now(ZoneInfo("America/New_York")).date())
    async with payments.app.state.session_factory() as session:
        stripe_card = (await session.get(PaymentMethod, uuid.UUID(card["id"]))).stripe_payment_method_id
    async with httpx.AsyncClient(base_url=stripe_webhooks.url) as sandbox:
        await sandbox.post(f"/_sim/payment_methods/{stripe_card}/decline", json={"decline_code": "insufficient_funds"})

    now = datetime.now(UTC)
    assert await run(payments, now) == 1
    first = (await kit.outbox_events(payments, "payment.failed", tenant))[0]["data"]
    payment_id, scheduled = first["payment_id"], first["next_attempt_at"]

    # The client tries again at once with the same card: declined again, the dunning schedule unchanged.
    retried = await payments.post(f"/v1/payments/{payment_id}/retry", headers={**headers, "Idempotency-Key": "r1"})
    assert retried.status_code == 200, retried.text
    assert [a["client_initiated"] for a in retried.json()["attempts"]] == [False, True]
    second = (await kit.outbox_events(payments, "payment.failed", tenant))[-1]["data"]
    assert second["attempt"] == 2 and second["retryable"] is True and second["next_attempt_at"] == scheduled
    # A double click (same key) does not charge again.
    again = await payments.post(f"/v1/payments/{payment_id}/retry", headers={**headers, "Idempotency-Key": "r1"})
    assert again.status_code == 200 and len(again.json()["attempts"]) == 2

    # Then with a new card: paid, and the scheduled retry has nothing left to do.
    new_card = await kit.save_card(payments, headers, "acme")
    paid = await payments.post(f"/v1/payments/{payment_id}/retry", headers={**headers, "Idempotency-Key": "r2"},
                               json={"payment_method_id": new_card["id"]})
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "succeeded"
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert [(e["data"]["attempt"], e["data"]["amount_minor"]) for e in settled] == [(3, 8_800)]
    assert await run(payments, datetime.fromisoformat(scheduled) + timedelta(minutes=1)) == 0
    done = await payments.post(f"/v1/payments/{payment_id}/retry", headers=headers)
    assert done.status_code == 409, done.text
    unknown = await payments.post(f"/v1/payments/{uuid.uuid4()}/retry", headers=headers)
    assert unknown.status_code == 404
