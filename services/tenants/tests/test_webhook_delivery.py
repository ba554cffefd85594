"""Partner webhooks end to end: fan-out, signed delivery in order through failures, disabling, replay."""
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from payloop.events import new_event

TENANT, OTHER = "tenant-hooks-a", "tenant-hooks-b"


async def make_endpoint(client, token, url, **extra):
    response = await client.post("/v1/webhook-endpoints", json={"url": url, **extra},
                                 headers=token(TENANT, "tenants:write"))
    assert response.status_code == 201, response.text
    return response.json()


async def delivery_rows(client, endpoint_id):
    async with client.app.state.session_factory() as session:
        rows = await session.execute(text(
            "SELECT id, status, attempts FROM webhook_deliveries WHERE endpoint_id = :e ORDER BY seq"),
            {"e": endpoint_id})
        return rows.all()


async def test_failing_receiver_that_recovers_gets_every_event_once_in_order_signed(infra, token, h):
    async with h.Receiver(fail_first=4) as receiver, h.tenants_service(infra) as client:
        endpoint = await make_endpoint(client, token, receiver.url, event_types=["invoice.created"])
        secret = endpoint["secret"]
        assert secret.startswith("whsec_")
        events = [h.invoice_event(TENANT, f"INV-{i}") for i in range(8)]
        # Another tenant's event and a type the endpoint did not subscribe to must not arrive.
        stranger = h.invoice_event(OTHER, "INV-X")
        unsubscribed = new_event("tenant.updated", tenant_id=TENANT, producer="tenants", data={
            "tenant_id": TENANT, "name": "Hooks MSP", "timezone": "UTC", "currency": "USD"})
        await h.consume(client, *events[:5], stranger, unsubscribed)
        await h.consume(client, *events[5:])

        await h.wait_for(lambda: len(receiver.accepted) == len(events))
        assert [r.id for r in receiver.accepted] == [str(e.id) for e in events]
        assert len(receiver.requests) == len(events) + 4  # the first event was tried 5 times
        for received in receiver.requests:
            assert h.verify(secret, received.headers, received.body), received.headers
            assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 300
            body = received.json
            assert body["type"] == "invoice.created" and body["tenant_id"] == TENANT
        assert [r.json["data"]["number"] for r in receiver.accepted] == [f"INV-{i}" for i in range(8)]
        # A forged signature (another secret) does not verify.
        other = (await make_endpoint(client, token, receiver.url))["secret"]
        assert not h.verify(other, receiver.accepted[0].headers, receiver.accepted[0].body)

        rows = await delivery_rows(client, endpoint["id"])
        assert [r.status for r in rows] == ["succeeded"] * 8
        assert rows[0].attempts == 5 and all(r.attempts == 1 for r in rows[1:])
        log = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{rows[0].id}",
                                headers=token(TENANT, "ar:read"))).json()
        statuses = [a["response_status"] for a in log["attempts_log"]]
        assert statuses == [503, 503, 503, 503, 200]
        assert log["attempts_log"][0]["response_excerpt"] == "receiver down for maintenance"
        assert log["attempts_log"][0]["request_headers"]["webhook-id"] == str(events[0].id)
        assert "webhook-signature" not in log["attempts_log"][0]["request_headers"]
        page = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries?limit=5",
                                 headers=token(TENANT, "ar:read"))).json()
        assert len(page["items"]) == 5 and page["next_cursor"]
        rest = (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries?cursor={page['next_cursor']}",
                                 headers=token(TENANT, "ar:read"))).json()
        assert len(rest["items"]) == 3 and rest["next_cursor"] is None


async def test_persistent_failure_disables_endpoint_with_notice_and_reenabling_resumes(infra, token, h):
    async with h.Receiver(always_fail=True) as receiver, h.tenants_service(infra) as client:
        endpoint = await make_endpoint(client, token, receiver.url)
        first, second = h.invoice_event(TENANT, "INV-1"), h.invoice_event(TENANT, "INV-2")
        await h.consume(client, first, second)

        async def disabled():
            got = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=token(TENANT, "ar:read"))
            return got.json()["status"] == "disabled" and got.json()
        state = await h.wait_for(disabled)
        assert "failed 7 times" in state["disabled_reason"]
        # Head of line: the second event was never sent while the first kept failing.
        assert {r.id for r in receiver.requests} == {str(first.id)}
        assert len(receiver.requests) == len(h.FAST_SCHEDULE) + 1
        rows = await delivery_rows(client, endpoint["id"])
        assert [r.status for r in rows] == ["failed", "pending"]
        async with client.app.state.session_factory() as session:
            notices = (await session.execute(text(
                "SELECT convert_from(payload, 'UTF8')::jsonb AS event FROM outbox "
                "WHERE topic = 'webhook_endpoint.disabled'"))).scalars().all()
        assert len(notices) == 1 and notices[0]["data"]["endpoint_id"] == endpoint["id"]
        assert notices[0]["tenant_id"] == TENANT

        receiver.always_fail = False
        enabled = await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"status": "enabled"},
                                     headers=token(TENANT, "tenants:write"))
        assert enabled.status_code == 200 and enabled.json()["disabled_reason"] is None
        await h.wait_for(lambda: [r.id for r in receiver.accepted] == [str(second.id)])
        # The failed one comes back by replay, with the same webhook-id.
        replay = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries/{rows[0].id}/replay",
                                   headers=token(TENANT, "tenants:write"))
        assert replay.status_code == 202 and replay.json()["replay_of"] == str(rows[0].id)
        await h.wait_for(lambda: [r.id for r in receiver.accepted] == [str(second.id), str(first.id)])


async def test_rotation_signs_with_both_secrets_during_overlap_then_only_the_new(infra, token, h):
    async with h.Receiver() as receiver, h.tenants_service(infra) as client:
        endpoint = await make_endpoint(client, token, receiver.url)
        old = endpoint["secret"]
        rotated = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                                    json={"overlap_hours": 2}, headers=token(TENANT, "tenants:write"))
        assert rotated.status_code == 200
        new = rotated.json()["secret"]
        assert new != old and rotated.json()["previous_secret_expires_at"]
        await h.consume(client, h.invoice_event(TENANT, "INV-1"))
        await h.wait_for(lambda: len(receiver.accepted) == 1)
        during = receiver.accepted[0]
        assert len(during.headers["webhook-signature"].split(" ")) == 2
        assert h.verify(old, during.headers, during.body) and h.verify(new, during.headers, during.body)

        again = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                                  json={"overlap_hours": 0}, headers=token(TENANT, "tenants:write"))
        newest = again.json()["secret"]
        await h.consume(client, h.invoice_event(TENANT, "INV-2"))
        await h.wait_for(lambda: len(receiver.accepted) == 2)
        after = receiver.accepted[1]
        assert h.verify(newest, after.headers, after.body)
        assert not h.verify(new, after.headers, after.body) and not h.verify(old, after.headers, after.body)


async def test_range_replay_resends_in_order_and_can_skip_what_was_delivered(infra, token, h):
    async with h.Receiver() as receiver, h.tenants_service(infra) as client:
        endpoint = await make_endpoint(client, token, receiver.url, event_types=["invoice.created"])
        base = datetime(2026, 11, 1, tzinfo=UTC)
        events = [h.invoice_event(TENANT, f"INV-{i}").model_copy(update={"occurred_at": base + timedelta(hours=i)})
                  for i in range(4)]
        await h.consume(client, *events[:2])
        await h.wait_for(lambda: len(receiver.accepted) == 2)
        # Events that arrived while the endpoint was disabled are kept, and come back by range replay.
        await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"status": "disabled"},
                           headers=token(TENANT, "tenants:write"))
        await h.consume(client, *events[2:])
        await client.patch(f"/v1/webhook-endpoints/{endpoint['id']}", json={"status": "enabled"},
                           headers=token(TENANT, "tenants:write"))
        url = f"/v1/webhook-endpoints/{endpoint['id']}/replay"
        undelivered = await client.post(url, json={"since": base.isoformat(), "only_undelivered": True},
                                        headers=token(TENANT, "tenants:write"))
        assert undelivered.status_code == 202 and undelivered.json() == {"scheduled": 2}
        await h.wait_for(lambda: len(receiver.accepted) == 4)
        everything = await client.post(url, json={"since": base.isoformat(),
                                                  "until": (base + timedelta(hours=3)).isoformat()},
                                       headers=token(TENANT, "tenants:write"))
        assert everything.json() == {"scheduled": 3}
        await h.wait_for(lambda: len(receiver.accepted) == 7)
        ids = [str(e.id) for e in events]
        assert [r.id for r in receiver.accepted] == ids + ids[:3]
        bad = await client.post(url, json={"since": base.isoformat(), "until": base.isoformat()},
                                headers=token(TENANT, "tenants:write"))
        assert bad.status_code == 422
