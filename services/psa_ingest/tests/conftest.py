"""Shared test helpers: the ConnectWise simulator in-process, a connection to it, the outbox as read."""
from __future__ import annotations

import json
from dataclasses import replace

from sqlalchemy import text

from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE
from payloop.simulators.connectwise import CLIENT_ID, COMPANY_ID, PRIVATE_KEY, PUBLIC_KEY
from payloop_psa_ingest.service import SERVICE
from payloop_psa_ingest.writeback import on_payment_disputed, on_payment_settled

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


def _payment(payment_id: str, invoice_id: str, amount_minor: int, attempt: int = 1) -> dict:
    return {"payment_id": payment_id, "method": {"type": "card", "brand": "visa", "last4": "4242"},
            "amount_minor": amount_minor, "currency": "USD", "fee_minor": 30, "attempt": attempt,
            "allocations": [{"invoice_id": invoice_id, "amount_minor": amount_minor}],
            "processor": {"payment_intent_id": f"pi_{payment_id}"}}


async def _handle(client, event, handler) -> None:
    """Handle one event as the consumer would hand it over."""
    async with client.app.state.session_factory() as session, session.begin():
        await handler(session, event, CATALOGUE.parse(event.type, event.version, event.data))


async def settle(client, tenant: str, invoice_id: str, amount_minor: int, payment_id: str, *,
                 attempt: int = 1) -> None:
    """`payment.settled` of one payment for one invoice."""
    await _handle(client, new_event("payment.settled", tenant_id=tenant, producer="payments",
                                    data=_payment(payment_id, invoice_id, amount_minor, attempt)), on_payment_settled)


async def dispute(client, tenant: str, invoice_id: str, amount_minor: int, payment_id: str, *, dispute_id: str,
                  status: str) -> None:
    """`payment.disputed` of the whole payment (a chargeback, or an ACH debit returned)."""
    data = {**_payment(payment_id, invoice_id, amount_minor), "dispute_id": dispute_id,
            "disputed_minor": amount_minor, "status": status}
    await _handle(client, new_event("payment.disputed", tenant_id=tenant, producer="payments", data=data),
                  on_payment_disputed)


async def serve(app):
    """The service app on a real port (its lifespan already runs under running_service)."""
    import asyncio

    import uvicorn

    from payloop.embedded import free_port
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, task


async def wait_for(predicate, timeout=15.0):
    import asyncio
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await predicate()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return result


import pytest
import pytest_asyncio

from payloop.embedded import free_port
from payloop.simulators.connectwise import ConnectWiseSimulator


def _load_harnesses() -> dict:
    """tests/vendor_harness.py as a module (the importlib import mode puts no test folder on sys.path)."""
    import importlib.util
    import sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("psa_vendor_harness", Path(__file__).with_name("vendor_harness.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["psa_vendor_harness"] = module
    spec.loader.exec_module(module)
    return module.HARNESSES


HARNESSES = _load_harnesses()


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
                                 credentials=credentials, serve=serve, wait_for=wait_for, settle=settle,
                                 dispute=dispute)


@pytest_asyncio.fixture(params=sorted(HARNESSES))
async def vendor(request):
    """Each vendor beyond ConnectWise: a seeded simulator on a free port and what tests know of its formats."""
    harness = HARNESSES[request.param]()
    await harness.sim.start(free_port())
    try:
        yield harness
    finally:
        await harness.sim.stop()
