"""Connecting, reconnecting and re-mapping accounts are audited in the transaction of the change,
and neither the authorization code nor the OAuth tokens reach the audit trail."""
import json

import jwt
from gl_activity import tenant, wait_for
from sqlalchemy import text

from payloop.secrets import secret_box
from payloop.testing.plugin import running_service
from payloop_gl_posting.service import SERVICE


async def audit_entries(client, tenant_id: str) -> list[dict]:
    async with client.app.state.session_factory() as session:
        rows = (await session.execute(text("SELECT payload FROM outbox WHERE topic = 'audit.recorded' ORDER BY seq"))
                ).scalars().all()
    return [e for e in (json.loads(bytes(r)) for r in rows) if e["tenant_id"] == tenant_id]


async def test_connection_and_mapping_changes_are_audited_without_secrets(infra, qbo, token):
    t = tenant()
    headers = token(t, "gl:write", "ar:read")
    realm = (await qbo.company())["realm_id"]
    codes = []
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        for _ in range(2):  # connect, then reconnect with a fresh consent
            codes.append(await qbo.consent(realm))
            answer = await client.put("/v1/gl/connection", headers=headers, json={
                "system": "quickbooks", "company_id": realm, "authorization_code": codes[-1],
                "redirect_uri": "http://127.0.0.1/callback"})
            assert answer.status_code == 202, answer.text

            async def connected():
                view = (await client.get("/v1/gl/connection", headers=headers)).json()
                return view if view["status"] == "connected" else None
            await wait_for(connected)

        accounts = {a["Name"]: a["Id"] for a in (await qbo.state(realm))["entities"]["Account"]}
        mapping = {"clearing_account_id": accounts["Undeposited Funds"], "bank_account_id": accounts["Checking"],
                   "fee_account_id": accounts["Merchant Processing Fees"],
                   "refunds_account_id": accounts["Refunds and Chargebacks"]}
        answer = await client.put("/v1/gl/account-mapping", headers=headers, json=mapping)
        assert answer.status_code == 200, answer.text
        # A mapping the chart of accounts refuses changes nothing, so it records nothing.
        refused = await client.put("/v1/gl/account-mapping", headers=headers,
                                   json={**mapping, "fee_account_id": accounts["Checking"]})
        assert refused.status_code == 422

        entries = await audit_entries(client, t)
        async with client.app.state.session_factory() as session:
            stored = (await session.execute(text("SELECT access_token_enc, refresh_token_enc FROM gl_connections"
                                                 " WHERE tenant_id = :t"), {"t": t})).one()

    assert [(e["data"]["action"], e["data"]["target"]) for e in entries] == [
        ("accounting_connection.created", {"type": "accounting_connection", "id": t}),
        ("accounting_connection.changed", {"type": "accounting_connection", "id": t}),
        ("account_mapping.changed", {"type": "account_mapping", "id": t}),
    ]
    sub = jwt.decode(headers["Authorization"].removeprefix("Bearer "), options={"verify_signature": False})["sub"]
    assert all(e["data"]["actor"]["subject"] == sub and e["producer"] == "gl_posting" for e in entries)
    assert entries[0]["data"]["details"]["company_id"] == realm
    assert entries[2]["data"]["details"]["fee_account_id"] == accounts["Merchant Processing Fees"]
    raw = json.dumps(entries)
    for secret in [*codes, *(secret_box().decrypt(value) for value in stored),
                   headers["Authorization"].removeprefix("Bearer ")]:
        assert secret not in raw
