"""Through the real broker once: the tenants service consumes its own topics (audit, tenant.updated)
and delivers them to a partner; the signing secret never shows up anywhere but the create response."""
from sqlalchemy import text

TENANT = "tenant-kafka-a"


async def test_events_reach_partner_and_audit_log_through_kafka_and_secret_never_leaks(infra, token, h, capfd):
    async with h.Receiver() as receiver, h.tenants_service(infra, consumers=True) as client:
        created = await client.post("/v1/webhook-endpoints", json={"url": receiver.url, "event_types": ["tenant.updated"]},
                                    headers=token(TENANT, "tenants:write"))
        secret = created.json()["secret"]
        put = await client.put(f"/v1/tenants/{TENANT}", json={"name": "Kafka MSP"},
                               headers=token(TENANT, "tenants:write"))
        assert put.status_code == 200

        await h.wait_for(lambda: len(receiver.accepted) == 1, timeout=60)
        delivered = receiver.accepted[0]
        assert delivered.json["type"] == "tenant.updated" and delivered.json["data"]["name"] == "Kafka MSP"
        assert h.verify(secret, delivered.headers, delivered.body)

        async def audit_actions():
            got = await client.get("/v1/audit-events", headers=token(TENANT, "audit:read"))
            return sorted(i["action"] for i in got.json()["items"])
        async def audit_complete():
            return await audit_actions() == ["tenant.updated", "webhook_endpoint.created"]
        await h.wait_for(audit_complete, timeout=60)

        # The secret: only in the create response; masked or absent everywhere else.
        endpoint_id = created.json()["id"]
        auth = token(TENANT, "admin")
        responses = [await client.get(path, headers=auth) for path in (
            "/v1/webhook-endpoints", f"/v1/webhook-endpoints/{endpoint_id}",
            f"/v1/webhook-endpoints/{endpoint_id}/deliveries", "/v1/audit-events")]
        assert all(r.status_code == 200 for r in responses)
        assert responses[1].json()["secret_hint"] == "****" + secret[-4:]
        async with client.app.state.session_factory() as session:
            stored = (await session.execute(text(
                "SELECT (SELECT string_agg(convert_from(payload, 'UTF8'), '') FROM outbox) || "
                "(SELECT string_agg(secret_encrypted, '') FROM webhook_endpoints) || "
                "(SELECT string_agg(request_headers::text || coalesce(response_excerpt, ''), '') "
                " FROM webhook_attempts) || (SELECT string_agg(details::text, '') FROM audit_entries)"))).scalar()
        out, err = capfd.readouterr()
        key = secret.removeprefix("whsec_")
        for place, content in {"responses": "".join(r.text for r in responses), "database": stored,
                                "logs": out + err}.items():
            assert key not in content, f"the signing secret leaked into {place}"
