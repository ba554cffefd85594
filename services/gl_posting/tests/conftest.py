"""Fixtures of the gl_posting tests: the QuickBooks simulator on a free port, a connected tenant."""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import pytest_asyncio
import uvicorn

from payloop.embedded import free_port
from payloop.simulators import quickbooks


@dataclass
class QuickBooksSim:
    url: str
    sim: quickbooks.Simulator
    http: httpx.AsyncClient

    async def company(self) -> dict:
        return (await self.http.post("/_sim/companies", json={"name": "Test MSP"})).json()

    async def state(self, realm: str) -> dict:
        return (await self.http.get(f"/_sim/companies/{realm}")).json()

    async def invoice(self, realm: str, number: str, customer: str, amount: str) -> dict:
        answer = await self.http.post(f"/_sim/companies/{realm}/invoices",
                                      json={"doc_number": number, "customer": customer, "amount": amount})
        return answer.json()["Invoice"]

    async def faults(self, realm: str, **faults) -> None:
        (await self.http.post(f"/_sim/companies/{realm}/faults", json=faults)).raise_for_status()

    async def requests(self, realm: str) -> list[dict]:
        return (await self.http.get(f"/_sim/companies/{realm}/requests")).json()["requests"]

    async def consent(self, realm: str, redirect_uri: str = "http://127.0.0.1/callback") -> str:
        """Walk the consent screen as the MSP would; returns the authorization code."""
        answer = await self.http.get("/connect/oauth2", params={
            "client_id": "payloop-dev", "redirect_uri": redirect_uri, "response_type": "code",
            "scope": "com.intuit.quickbooks.accounting", "state": uuid.uuid4().hex, "realmId": realm})
        assert answer.status_code == 302
        query = parse_qs(urlparse(answer.headers["location"]).query)
        assert query["realmId"] == [realm]
        return query["code"][0]


@pytest_asyncio.fixture
async def qbo(monkeypatch) -> QuickBooksSim:
    port = free_port()
    sim = quickbooks.Simulator()
    server = uvicorn.Server(uvicorn.Config(quickbooks.create_app(sim), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    for key, value in {"QUICKBOOKS_API_BASE": url, "QUICKBOOKS_AUTH_URL": f"{url}/connect/oauth2",
                       "QUICKBOOKS_TOKEN_URL": f"{url}/oauth2/v1/tokens/bearer", "HTTP_TIMEOUT_S": "1.5",
                       "POLL_INTERVAL_S": "0.05", "TRANSIENT_RETRY_S": "0.1", "DEPENDENCY_RETRY_S": "0.05"}.items():
        monkeypatch.setenv(f"PAYLOOP_GL_{key}", value)
    async with httpx.AsyncClient(base_url=url) as http:
        yield QuickBooksSim(url, sim, http)
    server.should_exit = True
    await task

