"""Connections API: credentials encrypted and never returned; another tenant's real ids answer 404."""
from sqlalchemy import text

from payloop.simulators.connectwise import PRIVATE_KEY
from payloop.testing.plugin import running_service


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
