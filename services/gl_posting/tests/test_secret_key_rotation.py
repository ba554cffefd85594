"""Encryption key rotation of the stored OAuth secrets: written under key A, re-encrypted after
`PAYLOOP_ENCRYPTION_KEYS` became "B,A", then readable with B alone, and posting still authenticates."""
import pytest
from cryptography.fernet import Fernet
from gl_activity import tenant, wait_for
from sqlalchemy import text

from payloop.secrets import SecretBox, secret_box
from payloop.settings import platform_settings
from payloop.testing.plugin import running_service
from payloop_gl_posting.service import SERVICE

KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def encryption_keys(monkeypatch):
    def use(*keys: str) -> None:
        monkeypatch.setenv("PAYLOOP_ENCRYPTION_KEYS", ",".join(keys))
        platform_settings.cache_clear()
        secret_box.cache_clear()
    yield use
    monkeypatch.undo()
    platform_settings.cache_clear()
    secret_box.cache_clear()


async def test_rotated_keys_leave_the_oauth_tokens_readable_with_the_new_key_alone(infra, qbo, token,
                                                                                 encryption_keys):
    encryption_keys(KEY_A)
    t = tenant()
    headers = token(t, "admin")
    realm = (await qbo.company())["realm_id"]
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        answer = await client.put("/v1/gl/connection", headers=headers, json={
            "system": "quickbooks", "company_id": realm, "authorization_code": await qbo.consent(realm),
            "redirect_uri": "http://127.0.0.1/callback"})
        assert answer.status_code == 202, answer.text

        async def connected():
            view = (await client.get("/v1/gl/connection", headers=headers)).json()
            return view if view["status"] == "connected" else None
        await wait_for(connected)

        async def columns() -> list[str]:
            async with client.app.state.session_factory() as session:
                row = (await session.execute(text(
                    "SELECT authorization_code_enc, access_token_enc, refresh_token_enc FROM gl_connections"
                    " WHERE tenant_id = :t"), {"t": t})).one()
            return [value for value in row if value is not None]
        before = [SecretBox([KEY_A]).decrypt(value) for value in await columns()]
        assert len(before) >= 2

        encryption_keys(KEY_B, KEY_A)
        answer = await client.post("/v1/admin/rotate-secrets", headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"rotated": len(before)}
        async with client.app.state.session_factory() as session:
            audited = (await session.execute(text(
                "SELECT convert_from(payload, 'UTF8')::jsonb -> 'data' FROM outbox WHERE topic = 'audit.recorded'"
            ))).scalars().all()
        assert [a["details"] for a in audited if a["action"] == "secrets.rotated"] == [{"rotated": len(before)}]

        encryption_keys(KEY_B)
        assert [SecretBox([KEY_B]).decrypt(value) for value in await columns()] == before
        # The service itself reads them with B alone: the chart of accounts is fetched with the access token.
        state = await qbo.state(realm)
        accounts = {a["Name"]: a["Id"] for a in state["entities"]["Account"]}
        mapped = await client.put("/v1/gl/account-mapping", headers=headers, json={
            "clearing_account_id": accounts["Undeposited Funds"], "bank_account_id": accounts["Checking"],
            "fee_account_id": accounts["Merchant Processing Fees"],
            "refunds_account_id": accounts["Refunds and Chargebacks"]})
        assert mapped.status_code == 200, mapped.text
        assert mapped.json()["mapping"]["validated_at"] is not None
