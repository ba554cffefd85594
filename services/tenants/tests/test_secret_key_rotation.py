"""Encryption key rotation of the stored webhook signing secrets: written under key A, re-encrypted
after `PAYLOOP_ENCRYPTION_KEYS` became "B,A", and then readable with B alone; another tenant's
secrets are not touched by this tenant's admin."""
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from payloop.secrets import SecretBox, SecretError, secret_box
from payloop.settings import platform_settings
from payloop_tenants.models import WebhookEndpoint

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


async def stored(client, tenant: str) -> list[str]:
    async with client.app.state.session_factory() as session:
        rows = (await session.execute(select(WebhookEndpoint.secret_encrypted, WebhookEndpoint.previous_secret_encrypted)
                                      .where(WebhookEndpoint.tenant_id == tenant))).all()
    return [value for row in rows for value in row if value is not None]


async def test_rotated_keys_leave_every_secret_readable_with_the_new_key_alone(infra, token, h, encryption_keys):
    encryption_keys(KEY_A)
    owner, stranger = token("rot-owner", "admin"), token("rot-stranger", "admin")
    async with h.tenants_service(infra) as client:
        created = await client.post("/v1/webhook-endpoints", json={"url": "https://example.com/a"}, headers=owner)
        assert created.status_code == 201, created.text
        endpoint = created.json()
        rotated = await client.post(f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret",
                                    json={"overlap_hours": 24}, headers=owner)
        assert rotated.status_code == 200, rotated.text
        plain = [rotated.json()["secret"], endpoint["secret"]]  # current, then previous (in its overlap)
        other = await client.post("/v1/webhook-endpoints", json={"url": "https://example.com/b"}, headers=stranger)
        assert other.status_code == 201

        encryption_keys(KEY_B, KEY_A)
        answer = await client.post("/v1/admin/rotate-secrets", headers=owner)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"rotated": 2}
        async with client.app.state.session_factory() as session:
            audited = (await session.execute(text(
                "SELECT convert_from(payload, 'UTF8')::jsonb -> 'data' FROM outbox WHERE topic = 'audit.recorded'"
            ))).scalars().all()
        assert [(a["action"], a["details"]) for a in audited if a["action"] == "secrets.rotated"] == [
            ("secrets.rotated", {"rotated": 2})]

        encryption_keys(KEY_B)
        assert [SecretBox([KEY_B]).decrypt(v) for v in await stored(client, "rot-owner")] == plain
        assert (await client.get(f"/v1/webhook-endpoints/{endpoint['id']}", headers=owner)).status_code == 200
        # The stranger's secret was not this admin's to rotate: it still needs key A.
        with pytest.raises(SecretError):
            SecretBox([KEY_B]).decrypt((await stored(client, "rot-stranger"))[0])
        assert SecretBox([KEY_A]).decrypt((await stored(client, "rot-stranger"))[0]) == other.json()["secret"]
