"""Issue 8 in psa_ingest: stored PSA credentials follow a key rotation; callbacks are rate limited."""
import json

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from payloop.secrets import SecretBox, secret_box
from payloop.settings import platform_settings
from payloop.simulators.connectwise import PRIVATE_KEY
from payloop.testing.plugin import running_service

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


async def test_rotation_leaves_psa_credentials_readable_with_the_new_key_alone(infra, token, cw, psa,
                                                                             encryption_keys):
    encryption_keys(KEY_A)
    admin = token(psa.TENANT, "admin")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, admin, cw)

        async def stored() -> str:
            async with client.app.state.session_factory() as session:
                return (await session.execute(text("SELECT credentials_encrypted FROM psa_connections"))).scalar()
        assert PRIVATE_KEY in SecretBox([KEY_A]).decrypt(await stored())

        encryption_keys(KEY_B, KEY_A)
        rotated = await client.post("/v1/admin/rotate-secrets", headers=admin)
        assert rotated.status_code == 200 and rotated.json() == {"rotated": 1}
        assert PRIVATE_KEY in SecretBox([KEY_B]).decrypt(await stored())
        audit = [e for e in await psa.outbox_events(client, "audit.recorded")]
        assert [e["data"]["action"] for e in audit] == ["secrets.rotated"]
        assert PRIVATE_KEY not in json.dumps(audit)

        encryption_keys(KEY_B)  # the old key is gone: the connection still authenticates
        checked = await client.post(f"/v1/psa/connections/{connection_id}/test", headers=admin)
        assert checked.json()["ok"] is True
        assert (await client.post("/v1/admin/rotate-secrets", headers=token(psa.TENANT, "ar:read"))).status_code == 403


async def test_a_flood_of_callbacks_is_refused_with_429_before_any_verification(infra, psa):
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        codes = [(await client.post("/webhooks/psa/not-a-connection", content=b"{}")).status_code
                 for _ in range(205)]
        assert codes[:200] == [401] * 200  # unverifiable, answered without changing anything
        refused = await client.post("/webhooks/psa/not-a-connection", content=b"{}")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["content-type"] == "application/problem+json"
