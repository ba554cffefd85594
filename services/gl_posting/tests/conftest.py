"""Fixtures of the gl_posting tests: the QuickBooks and Xero simulators on free ports, in-process."""
from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
import pytest_asyncio
import uvicorn

from payloop.embedded import free_port
from payloop.simulators import quickbooks, xero


def _register_activity() -> None:
    """Make tests/activity.py importable as `gl_activity` (the importlib import mode adds no test folder
    to sys.path, and a plain `tests` package would collide with the other services' tests)."""
    spec = importlib.util.spec_from_file_location("gl_activity", Path(__file__).with_name("activity.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["gl_activity"] = module
    spec.loader.exec_module(module)


_register_activity()


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

    async def journal_entry(self, realm: str, lines: list[tuple[str, str, str]]) -> None:
        """A JournalEntry typed into QuickBooks by hand: (Debit|Credit, account id, amount) per line."""
        answer = await self.http.post(f"/_sim/companies/{realm}/journal-entries", json={
            "PrivateNote": "entered by hand", "Line": [
                {"Amount": amount, "DetailType": "JournalEntryLineDetail",
                 "JournalEntryLineDetail": {"PostingType": side, "AccountRef": {"value": account}}}
                for side, account, amount in lines]})
        answer.raise_for_status()

    async def consent(self, realm: str, redirect_uri: str = "http://127.0.0.1/callback") -> str:
        """Walk the consent screen as the MSP would; returns the authorization code."""
        answer = await self.http.get("/connect/oauth2", params={
            "client_id": "payloop-dev", "redirect_uri": redirect_uri, "response_type": "code",
            "scope": "com.intuit.quickbooks.accounting", "state": uuid.uuid4().hex, "realmId": realm})
        assert answer.status_code == 302
        query = parse_qs(urlparse(answer.headers["location"]).query)
        assert query["realmId"] == [realm]
        return query["code"][0]


@asynccontextmanager
async def serving(app, monkeypatch, settings: dict[str, str]):
    """Serve a simulator app on a free port of this event loop; point the service's settings at it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    for key, value in {**settings, "HTTP_TIMEOUT_S": "1.5", "POLL_INTERVAL_S": "0.05", "TRANSIENT_RETRY_S": "0.1",
                       "DEPENDENCY_RETRY_S": "0.05"}.items():
        monkeypatch.setenv(f"PAYLOOP_GL_{key}", value.format(url=url))
    try:
        yield url
    finally:
        server.should_exit = True
        await task


@pytest_asyncio.fixture
async def qbo(monkeypatch) -> QuickBooksSim:
    sim = quickbooks.Simulator()
    async with serving(quickbooks.create_app(sim), monkeypatch, {
            "QUICKBOOKS_API_BASE": "{url}", "QUICKBOOKS_AUTH_URL": "{url}/connect/oauth2",
            "QUICKBOOKS_TOKEN_URL": "{url}/oauth2/v1/tokens/bearer"}) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            yield QuickBooksSim(url, sim, http)


@dataclass
class XeroSim:
    url: str
    sim: xero.Simulator
    http: httpx.AsyncClient

    async def organisation(self) -> str:
        return (await self.http.post("/_sim/organisations", json={"name": "Test MSP"})).json()["tenant_id"]

    async def state(self, tenant: str) -> dict:
        return (await self.http.get(f"/_sim/organisations/{tenant}")).json()

    async def invoice(self, tenant: str, number: str, contact: str, amount: str) -> dict:
        answer = await self.http.post(f"/_sim/organisations/{tenant}/invoices",
                                      json={"invoice_number": number, "contact": contact, "amount": amount})
        return answer.json()["Invoices"][0]

    async def faults(self, tenant: str, **faults) -> None:
        (await self.http.post(f"/_sim/organisations/{tenant}/faults", json=faults)).raise_for_status()

    async def requests(self, tenant: str) -> list[dict]:
        return (await self.http.get(f"/_sim/organisations/{tenant}/requests")).json()["requests"]

    async def manual_journal(self, tenant: str, lines: list[tuple[str, str]]) -> None:
        """A manual journal typed into Xero by hand: (account code, amount, debit positive) per line."""
        answer = await self.http.post(f"/_sim/organisations/{tenant}/manual-journals", json={
            "Narration": "entered by hand", "JournalLines": [{"AccountCode": code, "LineAmount": amount}
                                                           for code, amount in lines]})
        answer.raise_for_status()

    async def consent(self, tenant: str, redirect_uri: str = "http://127.0.0.1/callback",
                      scope: str = "openid offline_access accounting.transactions accounting.settings "
                                   "accounting.reports.read") -> str:
        """Walk the consent screen as the MSP would; returns the authorization code."""
        answer = await self.http.get("/identity/connect/authorize", params={
            "response_type": "code", "client_id": "payloop-dev", "redirect_uri": redirect_uri, "scope": scope,
            "state": uuid.uuid4().hex, "tenantId": tenant})
        assert answer.status_code == 302
        return parse_qs(urlparse(answer.headers["location"]).query)["code"][0]


@pytest_asyncio.fixture
async def xero_sim(monkeypatch) -> XeroSim:
    sim = xero.Simulator()
    async with serving(xero.create_app(sim), monkeypatch, {
            "XERO_API_BASE": "{url}/api.xro/2.0", "XERO_AUTH_URL": "{url}/identity/connect/authorize",
            "XERO_TOKEN_URL": "{url}/connect/token", "XERO_CONNECTIONS_URL": "{url}/connections"}) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            yield XeroSim(url, sim, http)

