"""Helpers of the tenants tests, handed out as fixtures (test modules cannot import each other)."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from aiohttp import web

from payloop.embedded import free_port
from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE
from payloop.testing.plugin import running_service
from payloop_tenants.service import SERVICE
from payloop_tenants.webhooks.fanout import fan_out
from payloop_tenants.webhooks.sender import WebhookSender


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """An independent verifier written from the Standard Webhooks specification (not our signer)."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for candidate in headers["webhook-signature"].split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return True
    return False


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    fail_first: int = 0
    always_fail: bool = False
    fail_status: int = 503
    requests: list[Received] = field(default_factory=list)
    accepted: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        received = Received({k.lower(): v for k, v in request.headers.items()}, await request.read())
        self.requests.append(received)
        if self.always_fail or len(self.requests) <= self.fail_first:
            return web.Response(status=self.fail_status, text="receiver down for maintenance")
        self.accepted.append(received)
        return web.Response(status=200, text="ok")

    async def __aenter__(self) -> "Receiver":
        app = web.Application()
        app.router.add_post("/hooks", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()

# Delays of milliseconds instead of days: the schedule is data, swapped here at the composition root.
FAST_SCHEDULE = tuple(timedelta(milliseconds=ms) for ms in (20, 40, 80, 120, 160, 200))


@asynccontextmanager
async def tenants_service(infra, *, schedule=FAST_SCHEDULE, consumers=False):
    sender = WebhookSender(schedule=schedule, poll_interval_s=0.05)
    async with running_service(infra, replace(SERVICE, background=[sender.run]), consumers=consumers) as client:
        yield client


def invoice_event(tenant: str, number: str, *, client_id: str = "cli_1"):
    return new_event("invoice.created", tenant_id=tenant, client_id=client_id, producer="psa_ingest", data={
        "invoice_id": f"inv_{number}", "psa": {"source": "connectwise", "external_id": number},
        "number": number, "agreement": None, "currency": "USD", "issued_on": "2026-11-01",
        "due_on": "2026-12-01", "terms": "Net 30", "status": "open", "subtotal_minor": 10000,
        "tax_minor": 0, "total_minor": 10000, "balance_minor": 10000, "lines": [],
    })


async def consume(client, *events) -> None:
    """Apply events as the consumer runtime would (one transaction), without a Kafka group join."""
    async with client.app.state.session_factory() as session, session.begin():
        for event in events:
            await fan_out(session, event, CATALOGUE.parse(event.type, event.version, event.data))


async def wait_for(predicate, timeout=20.0, interval=0.05):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


class Helpers:
    FAST_SCHEDULE = FAST_SCHEDULE
    Receiver = Receiver
    tenants_service = staticmethod(tenants_service)
    invoice_event = staticmethod(invoice_event)
    consume = staticmethod(consume)
    wait_for = staticmethod(wait_for)
    verify = staticmethod(verify_standard_webhook)


@pytest.fixture
def h() -> type[Helpers]:
    return Helpers
