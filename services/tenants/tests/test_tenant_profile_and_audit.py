"""The tenant profile (strict schemas, tenant.updated through the outbox) and the audit log."""
from sqlalchemy import text

from payloop.auth import Principal
from payloop import audit
from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE
from payloop_tenants.audit.handlers import store_audit_entry

TENANT = "tenant-profile-a"
PROFILE = {
    "name": "Acme MSP", "timezone": "America/Chicago", "currency": "USD",
    "branding": {"logo_url": "https://cdn.acme.example/logo.png", "primary_color": "#0A7CFF",
                 "sender_name": "Acme Billing", "sender_email": "billing@acme.example",
                 "support_email": "help@acme.example", "support_phone": "+1 (555) 010-0100"},
    "settings": {"convenience_fee": {"card_basis_points": 300, "ach_fixed_minor": 0},
                 "payment_retry": {"schedule_days": [2, 4, 7], "notify_client": True},
                 "stripe_account_id": "acct_1DemoMsp"},
}


async def outbox_events(client, topic):
    async with client.app.state.session_factory() as session:
        rows = await session.execute(text(
            "SELECT convert_from(payload, 'UTF8')::jsonb FROM outbox WHERE topic = :t ORDER BY seq"), {"t": topic})
        return rows.scalars().all()


async def test_put_tenant_publishes_tenant_updated_and_audits_only_real_changes(infra, token, h):
    async with h.tenants_service(infra) as client:
        put = await client.put(f"/v1/tenants/{TENANT}", json=PROFILE, headers=token(TENANT, "tenants:write"))
        assert put.status_code == 200, put.text
        assert put.json()["settings"]["convenience_fee"]["card_basis_points"] == 300
        again = await client.put(f"/v1/tenants/{TENANT}", json=PROFILE, headers=token(TENANT, "tenants:write"))
        assert again.status_code == 200
        changed = {**PROFILE, "branding": {**PROFILE["branding"], "accent_color": "#112233"}}
        await client.put(f"/v1/tenants/{TENANT}", json=changed, headers=token(TENANT, "tenants:write"))

        updates = await outbox_events(client, "tenant.updated")
        assert len(updates) == 2  # the identical PUT published nothing
        assert updates[1]["data"]["branding"]["accent_color"] == "#112233"
        assert updates[0]["data"]["settings"]["payment_retry"]["schedule_days"] == [2, 4, 7]
        audits = await outbox_events(client, "audit.recorded")
        assert [a["data"]["action"] for a in audits] == ["tenant.updated", "tenant.updated"]
        assert audits[1]["data"]["details"] == {"fields": ["branding"]}
        got = await client.get(f"/v1/tenants/{TENANT}", headers=token(TENANT, "ar:read"))
        assert got.json()["branding"]["accent_color"] == "#112233"


async def test_unknown_or_invalid_profile_fields_are_refused(infra, token, h):
    async with h.tenants_service(infra) as client:
        auth = token(TENANT, "tenants:write")
        for bad in ({**PROFILE, "colour": "red"},
                    {**PROFILE, "branding": {"logo": "https://x.example/l.png"}},
                    {**PROFILE, "branding": {"primary_color": "blue"}},
                    {**PROFILE, "branding": {"logo_url": "javascript:alert(1)"}},
                    {**PROFILE, "settings": {"convenience_fee": {"card_basis_points": 2.5}}},
                    {**PROFILE, "settings": {"convenience_fee": {"card_basis_points": 5000}}},
                    {**PROFILE, "settings": {"payment_retry": {"schedule_days": [0]}}},
                    {**PROFILE, "timezone": "Mars/Olympus"}):
            response = await client.put(f"/v1/tenants/{TENANT}", json=bad, headers=auth)
            assert response.status_code == 422, (bad, response.text)
        assert await outbox_events(client, "tenant.updated") == []
        # What `payloop dev` seeds is a valid profile.
        demo = {"name": "Demo MSP", "timezone": "America/Chicago", "currency": "USD",
                "branding": {"primary_color": "#0f766e", "sender_name": "Demo MSP Billing"}}
        assert (await client.put(f"/v1/tenants/{TENANT}", json=demo, headers=auth)).status_code == 200


async def test_audit_entries_from_any_service_are_kept_and_served_per_tenant(infra, token, h):
    async with h.tenants_service(infra) as client:
        actor = Principal(tenant_id=TENANT, scopes=frozenset({"payments:write"}), subject="user-7")
        async with client.app.state.session_factory() as session, session.begin():
            await audit.record(session, actor, "payment.refunded", ("payment", "pay_1"),
                               {"amount_minor": 500, "stripe": {"api_key": "sk_live_planted"}}, producer="payments")
            await audit.record(session, Principal("someone-else", frozenset(), "u"), "payment.refunded",
                               ("payment", "pay_2"), {}, producer="payments")
        events = await outbox_events(client, "audit.recorded")
        assert "sk_live_planted" not in str(events)
        # Stored as the consumer would, twice: a redelivery adds nothing.
        async with client.app.state.session_factory() as session, session.begin():
            for raw in events + events[:1]:
                event = new_event("audit.recorded", tenant_id=raw["tenant_id"], producer=raw["producer"],
                                  data=raw["data"]).model_copy(update={"id": raw["id"]})
                await store_audit_entry(session, event, CATALOGUE.parse("audit.recorded", 1, event.data))

        listed = await client.get("/v1/audit-events", headers=token(TENANT, "audit:read"))
        assert listed.status_code == 200
        items = listed.json()["items"]
        assert len(items) == 1
        assert items[0] | {"id": None, "occurred_at": None} == {
            "id": None, "occurred_at": None, "service": "payments", "action": "payment.refunded",
            "actor_subject": "user-7", "actor_scopes": ["payments:write"], "target_type": "payment",
            "target_id": "pay_1", "details": {"amount_minor": 500, "stripe": {"api_key": "[redacted]"}}}
        filtered = await client.get("/v1/audit-events?action=webhook_endpoint.created",
                                    headers=token(TENANT, "audit:read"))
        assert filtered.json()["items"] == []
        assert (await client.get("/v1/audit-events", headers=token(TENANT, "ar:read"))).status_code == 403
