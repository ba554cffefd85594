"""Connections API: credentials encrypted and never returned; another tenant's real ids answer 404; credentials
replaced and connections disconnected, both audited."""
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from payloop.secrets import secret_box
from payloop.simulators.connectwise import PRIVATE_KEY
from payloop.testing.plugin import running_service
from payloop_psa_ingest import repository
from payloop_psa_ingest.writeback import process_due_writebacks


async def test_connections_keep_secrets_and_strangers_out(infra, token, cw, psa):
    owner = token(psa.TENANT, "psa:write", "ar:read")
    stranger = token("another-msp", "admin")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, owner, cw)
        shown = (await client.get(f"/v1/psa/connections/{connection_id}", headers=owner)).json()
        assert PRIVATE_KEY not in str(shown) and shown["credentials"]["private_key"].startswith("****")
        async with client.app.state.session_factory() as session:
            stored = (await session.execute(text("SELECT credentials_encrypted FROM psa_connections"))).scalar()
        assert PRIVATE_KEY not in stored
        checked = (await client.post(f"/v1/psa/connections/{connection_id}/test", headers=owner)).json()
        assert checked["ok"] is True

        for method, path, body in (
            ("GET", f"/v1/psa/connections/{connection_id}", None),
            ("POST", f"/v1/psa/connections/{connection_id}/test", None),
            ("POST", f"/v1/psa/connections/{connection_id}/sync", {}),
            ("GET", f"/v1/psa/connections/{connection_id}/sync-runs", None),
            ("POST", f"/v1/psa/connections/{connection_id}/webhooks", {"public_url": "https://evil.example"}),
        ):
            response = await client.request(method, path, json=body, headers=stranger)
            assert response.status_code == 404, (method, path, response.status_code)
        assert (await client.get("/v1/psa/connections", headers=stranger)).json()["items"] == []
        assert not [r for r in cw.requests if r["path"].endswith("/company/companies")], "nothing synced for a stranger"
        reader = token(psa.TENANT, "ar:read")
        assert (await client.post(f"/v1/psa/connections/{connection_id}/sync", json={}, headers=reader)).status_code == 403


async def audit_entries(client, action: str, connection_id: str) -> list[dict]:
    return [e["data"] for e in await outbox_events_of(client, "audit.recorded")
            if e["data"]["action"] == action and e["data"]["target"]["id"] == connection_id]


async def outbox_events_of(client, event_type: str) -> list[dict]:
    async with client.app.state.session_factory() as session:
        rows = (await session.execute(text("SELECT payload FROM outbox ORDER BY seq"))).scalars().all()
    return [e for e in map(json.loads, rows) if e["type"] == event_type]


async def test_new_credentials_replace_the_old_and_revive_a_refused_connection(infra, token, cw, psa):
    tenant = f"msp-{uuid.uuid4()}"
    owner = token(tenant, "psa:write", "ar:read")
    stranger = token(f"msp-{uuid.uuid4()}", "admin")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, owner, cw, private_key="wrong-key")
        url = f"/v1/psa/connections/{connection_id}"
        assert (await client.post(f"{url}/sync", json={}, headers=owner)).json()["status"] == "failed"
        assert (await client.get(url, headers=owner)).json()["status"] == "error"

        for body in ({"credentials": {"api_token": "x", "subdomain": "y"}}, {"poll_interval_s": 1},
                     {"base_url": "ftp://psa.example"}, {"colour": "blue"}):
            refused = await client.put(url, json=body, headers=owner)
            assert refused.status_code == 422, (body, refused.text)
            assert refused.headers["content-type"].startswith("application/problem+json")
        assert (await client.put(url, json={"credentials": psa.credentials()}, headers=stranger)).status_code == 404

        updated = await client.put(url, json={"credentials": psa.credentials(), "name": "Main PSA",
                                              "poll_interval_s": 900}, headers=owner)
        assert updated.status_code == 200, updated.text
        shown = updated.json()
        assert (shown["status"], shown["name"], shown["poll_interval_s"], shown["last_error"]) == \
            ("active", "Main PSA", 900, None)
        assert PRIVATE_KEY not in updated.text and shown["credentials"]["private_key"].startswith("****")
        run = (await client.post(f"{url}/sync", json={}, headers=owner)).json()
        assert run["status"] == "succeeded" and run["counts"]["client.upserted"] == len(cw.state.companies)

        entry, = await audit_entries(client, "psa_connection.updated", connection_id)
        assert entry["target"] == {"type": "psa_connection", "id": connection_id}
        assert entry["details"]["fields"] == ["credentials", "name", "poll_interval_s"]
        assert PRIVATE_KEY not in json.dumps(entry)


async def test_disconnecting_stops_syncs_write_backs_and_webhooks_and_keeps_the_history(infra, token, cw, psa):
    tenant = f"msp-{uuid.uuid4()}"
    owner = token(tenant, "psa:write", "ar:read")
    stranger = token(f"msp-{uuid.uuid4()}", "admin")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, owner, cw)
        url = f"/v1/psa/connections/{connection_id}"
        assert (await client.post(f"{url}/sync", json={}, headers=owner)).json()["status"] == "succeeded"
        invoice = next(e["data"] for e in await outbox_events_of(client, "invoice.created")
                       if e["tenant_id"] == tenant and e["data"]["status"] == "open")

        assert (await client.delete(url, headers=stranger)).status_code == 404
        assert (await client.get(url, headers=owner)).json()["status"] == "active"
        assert (await client.delete(url, headers=owner)).status_code == 204
        assert (await client.delete(url, headers=owner)).status_code == 204, "disconnecting again changes nothing"
        assert len(await audit_entries(client, "psa_connection.disconnected", connection_id)) == 1

        shown = (await client.get(url, headers=owner)).json()
        assert (shown["status"], shown["next_sync_at"], shown["credentials"]) == ("disconnected", None, {})
        async with client.app.state.session_factory() as session:
            stored = (await session.execute(text("SELECT credentials_encrypted FROM psa_connections WHERE id = :id"),
                                            {"id": uuid.UUID(connection_id)})).scalar()
            assert json.loads(secret_box().decrypt(stored)) == {}, "the PSA secrets are erased"
            assert (uuid.UUID(connection_id)) not in {c for _, c in await repository.due_connections(
                session, datetime.now(UTC) + timedelta(days=1))}

        calls = len(cw.requests)
        for method, path, body in (("POST", f"{url}/sync", {}), ("POST", f"{url}/test", None),
                                   ("POST", f"{url}/webhooks", {"public_url": "https://payloop.example"}),
                                   ("PUT", url, {"credentials": psa.credentials()})):
            response = await client.request(method, path, json=body, headers=owner)
            assert response.status_code == 409, (method, path, response.status_code)
        assert (await client.post(f"/webhooks/psa/{connection_id}", content=b"{}")).status_code == 401
        assert len(cw.requests) == calls, "nothing reached the PSA"

        # The history stays: runs, and the records as last seen.
        assert len((await client.get(f"{url}/sync-runs", headers=owner)).json()["items"]) == 1
        records = (await client.get("/v1/psa/records?kind=invoice&limit=5", headers=owner)).json()["items"]
        assert len(records) == 5

        # A payment settled afterwards is not written to the disconnected PSA, and says why.
        await psa.settle(client, tenant, invoice["invoice_id"], invoice["balance_minor"], "pay_after")
        await process_due_writebacks(client.app.state.session_factory)
        rows = (await client.get("/v1/psa/payment-writebacks", headers=owner)).json()["items"]
        assert [(r["status"], "disconnected" in r["last_error"]) for r in rows] == [("rejected", True)]
        assert len(cw.requests) == calls
