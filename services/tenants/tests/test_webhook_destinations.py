"""Where partner webhooks may go, and when to stop: endpoint URLs on loopback or private networks
are refused unless the settings allow them (dev, tests), also at send time; 410 Gone disables the
endpoint at once instead of retrying for days."""
from datetime import timedelta

import pytest
from sqlalchemy import text

TENANT = "tenant-destinations"
HOURS = tuple(timedelta(hours=n) for n in (1, 2, 4))  # a retry would not come within the test

PRIVATE_URLS = ["https://127.0.0.1/hooks", "https://localhost/hooks", "https://10.1.2.3/hooks",
                "https://192.168.0.10/hooks", "https://169.254.169.254/latest/meta-data", "https://[::1]/hooks",
                "https://100.64.0.1/hooks", "https://0.0.0.0/hooks", "https://[::ffff:127.0.0.1]/hooks"]


@pytest.fixture
def private_urls(monkeypatch):
    def allow(allowed: bool) -> None:
        monkeypatch.setenv("PAYLOOP_WEBHOOKS_ALLOW_PRIVATE_URLS", str(allowed).lower())
    return allow


async def test_private_and_loopback_urls_are_refused_unless_allowed(infra, token, h, private_urls):
    headers = token(TENANT, "tenants:write", "ar:read")
    private_urls(False)
    async with h.tenants_service(infra) as client:
        for url in PRIVATE_URLS:
            refused = await client.post("/v1/webhook-endpoints", json={"url": url}, headers=headers)
            assert refused.status_code == 422, url
            assert "public internet" in refused.json()["detail"]
        public = await client.post("/v1/webhook-endpoints", json={"url": "https://93.184.215.14/hooks"},
                                   headers=headers)
        assert public.status_code == 201, public.text
        moved = await client.patch(f"/v1/webhook-endpoints/{public.json()['id']}",
                                   json={"url": "https://10.0.0.8/hooks"}, headers=headers)
        assert moved.status_code == 422
        listed = (await client.get("/v1/webhook-endpoints", headers=headers)).json()
        assert [e["url"] for e in listed] == ["https://93.184.215.14/hooks"]

        private_urls(True)
        allowed = await client.post("/v1/webhook-endpoints", json={"url": PRIVATE_URLS[0]}, headers=headers)
        assert allowed.status_code == 201, allowed.text


async def test_a_destination_that_became_private_is_not_sent_to(infra, token, h, private_urls):
    private_urls(True)
    async with h.Receiver() as receiver, h.tenants_service(infra, schedule=HOURS) as client:
        created = await client.post("/v1/webhook-endpoints", json={"url": receiver.url},
                                    headers=token(TENANT, "tenants:write"))
        assert created.status_code == 201
        private_urls(False)  # as if the name now resolved to an address inside our network
        await h.consume(client, h.invoice_event(TENANT, "INV-P1"))

        async def attempted():
            async with client.app.state.session_factory() as session:
                return (await session.execute(text(
                    "SELECT a.error FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id "
                    "WHERE d.endpoint_id = :e"), {"e": created.json()["id"]})).scalars().all()
        errors = await h.wait_for(attempted)
        assert errors[0].startswith("not sent:") and "non-public address" in errors[0]
        assert receiver.requests == []


async def test_410_gone_disables_the_endpoint_at_once_with_a_notice(infra, token, h):
    async with h.Receiver(always_fail=True, fail_status=410) as receiver, \
            h.tenants_service(infra, schedule=HOURS) as client:
        created = await client.post("/v1/webhook-endpoints", json={"url": receiver.url},
                                    headers=token(TENANT, "tenants:write"))
        endpoint_id = created.json()["id"]
        first, second = h.invoice_event(TENANT, "INV-G1"), h.invoice_event(TENANT, "INV-G2")
        await h.consume(client, first, second)

        async def disabled():
            got = await client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=token(TENANT, "ar:read"))
            return got.json()["status"] == "disabled" and got.json()
        state = await h.wait_for(disabled)
        assert "410 Gone" in state["disabled_reason"]
        assert [r.id for r in receiver.requests] == [str(first.id)]  # one knock, no retries
        async with client.app.state.session_factory() as session:
            statuses = (await session.execute(text(
                "SELECT status FROM webhook_deliveries WHERE endpoint_id = :e ORDER BY seq"),
                {"e": endpoint_id})).scalars().all()
            notices = (await session.execute(text(
                "SELECT convert_from(payload, 'UTF8')::jsonb FROM outbox WHERE topic = 'webhook_endpoint.disabled'"
            ))).scalars().all()
        assert statuses == ["failed", "pending"]  # the rest waits for the tenant to re-enable
        assert [n["data"]["endpoint_id"] for n in notices] == [endpoint_id]
        assert "410 Gone" in notices[0]["data"]["reason"]
