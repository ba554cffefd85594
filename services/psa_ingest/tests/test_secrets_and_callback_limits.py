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
        answered = 0
        while (refused := await client.post("/webhooks/psa/not-a-connection", content=b"{}")).status_code == 401:
            answered += 1  # unverifiable, answered without changing anything
            assert answered < 2_000, "the flood was never refused"
        # The burst (200) is served, plus whatever refilled meanwhile at 20/s; then the flood is refused.
        assert answered >= 200
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["content-type"] == "application/problem+json"


async def test_operator_command_rotates_every_tenants_credentials(infra, token, cw, psa, encryption_keys):
    import asyncio
    import os
    import sys

    encryption_keys(KEY_A)
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        for tenant in ("msp-rot-1", "msp-rot-2"):
            await psa.connect(client, token(tenant, "admin"), cw)
        url = client.app.state.engine.url.render_as_string(hide_password=False)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "payloop_psa_ingest", "rotate-secrets",
            env={**os.environ, "PAYLOOP_PSA_INGEST_DATABASE_URL": url, "PAYLOOP_ENCRYPTION_KEYS": f"{KEY_B},{KEY_A}"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        assert "psa_connections.credentials_encrypted: re-encrypted 2 value(s)" in out.decode()
        async with client.app.state.session_factory() as session:
            stored = (await session.execute(text("SELECT credentials_encrypted FROM psa_connections"))).scalars().all()
        assert len(stored) == 2 and all(PRIVATE_KEY in SecretBox([KEY_B]).decrypt(value) for value in stored)
