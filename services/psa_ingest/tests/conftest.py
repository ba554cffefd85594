"""Shared test helpers: the ConnectWise simulator in-process, a connection to it, the outbox as read."""
from __future__ import annotations

import json
from dataclasses import replace

from sqlalchemy import text

from payloop.simulators.connectwise import CLIENT_ID, COMPANY_ID, PRIVATE_KEY, PUBLIC_KEY
from payloop_psa_ingest.service import SERVICE

# The service without its background loop: tests that drive syncs and write-backs by hand must not
# race the poller for the connection's lease.
SERVICE_WITHOUT_POLLER = replace(SERVICE, background=[])
TENANT = "msp-psa-tests"


def credentials(private_key: str = PRIVATE_KEY) -> dict:
    return {"company_id": COMPANY_ID, "public_key": PUBLIC_KEY, "private_key": private_key, "client_id": CLIENT_ID}


async def connect(client, headers, sim, *, private_key: str = PRIVATE_KEY, **settings) -> str:
    body = {"source": "connectwise", "name": "Sim", "base_url": sim.api_url,
            "credentials": credentials(private_key), "poll_interval_s": 3600,
            "settings": {"backoff_initial_s": 0.05, "page_size": 100, **settings}}
    response = await client.post("/v1/psa/connections", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def outbox_events(client, event_type: str | None = None) -> list[dict]:
    async with client.app.state.session_factory() as session:
        rows = (await session.execute(text("SELECT topic, payload FROM outbox ORDER BY seq"))).all()
    events = [json.loads(payload) for topic, payload in rows]
    return [e for e in events if event_type is None or e["type"] == event_type]


import pytest
import pytest_asyncio

from payloop.embedded import free_port
from payloop.simulators.connectwise import ConnectWiseSimulator


@pytest_asyncio.fixture
async def cw():
    """A freshly seeded ConnectWise simulator serving on a free port of this event loop."""
    sim = ConnectWiseSimulator()
    await sim.start(free_port())
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
def psa():
    """The helpers above, for tests (conftest modules are not importable under importlib mode)."""
    import types
    return types.SimpleNamespace(connect=connect, outbox_events=outbox_events, TENANT=TENANT,
                                 SERVICE_WITHOUT_POLLER=SERVICE_WITHOUT_POLLER, SERVICE=SERVICE,
                                 credentials=credentials)
