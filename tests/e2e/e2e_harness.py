"""The whole platform for end-to-end tests: six service processes on the test session's PostgreSQL and
broker, and the outside world on loopback (ConnectWise and QuickBooks simulators in-process, localstripe
behind the Stripe sandbox that adds ACH, card declines and payouts, an SMTP sink, and a partner's
webhook receiver).

Services are real processes started like `payloop dev` starts them (`tests/e2e/serve.py` only gives
each platform its own consumer groups), so a test can SIGKILL one and start it again on the same
database and group.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import importlib
import json
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlparse

import httpx
import uvicorn
from aiohttp import web

from payloop.auth import mint_token
from payloop.embedded import free_port
from payloop.services import SERVICES
from payloop.simulators import quickbooks, xero
from payloop.simulators.connectwise import CLIENT_ID, COMPANY_ID, PRIVATE_KEY, PUBLIC_KEY, ConnectWiseSimulator
from payloop.simulators.stripe_sandbox import StripeSandbox as StripeFront

HERE = Path(__file__).parent
STRIPE_KEY = "sk_test_payloop_e2e"


async def wait_for(predicate: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0,
                   interval: float = 0.2) -> Any:
    """Poll until `predicate()` is truthy. The timeout only bounds a broken run; nothing asserts on time."""
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        await asyncio.sleep(interval)


# --- outside systems ---------------------------------------------------------------------------------

def stripe_signature(body: bytes, secret: str) -> str:
    stamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


class InProcessApp:
    """An ASGI simulator served by uvicorn on a free port of the test's event loop."""

    def __init__(self, app):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._task: asyncio.Task | None = None

    async def start(self) -> "InProcessApp":
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.02)
        return self

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task


@dataclass
class PartnerReceiver:
    """A partner's webhook endpoint that verifies Standard Webhooks signatures as a partner would."""

    secret: str = ""
    received: list[dict] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    # Seconds to hold the next answer after taking the event in: the sender times out on a delivered event.
    stall_next_s: float = 0.0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> "PartnerReceiver":
        app = web.Application()
        app.router.add_post("/hooks", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        problem = verify_standard_webhook(self.secret, request.headers, body)
        if problem:
            self.rejected.append(problem)
            return web.Response(status=400, text=problem)
        self.received.append(json.loads(body))
        if self.stall_next_s:
            stall, self.stall_next_s = self.stall_next_s, 0.0
            await asyncio.sleep(stall)
        return web.Response(status=204)

    def of_type(self, event_type: str, tenant: str) -> list[dict]:
        return [e for e in self.received if e["type"] == event_type and e["tenant_id"] == tenant]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


def verify_standard_webhook(secret: str, headers, body: bytes) -> str | None:
    """None when `webhook-signature` holds a valid v1 signature of id.timestamp.body within 5 minutes."""
    msg_id, stamp = headers.get("webhook-id"), headers.get("webhook-timestamp")
    if not msg_id or not stamp or not secret:
        return "missing webhook headers or secret"
    if abs(time.time() - int(stamp)) > 300:
        return "timestamp outside the tolerance"
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()).decode()
    offered = [part.partition(",")[2] for part in headers.get("webhook-signature", "").split()]
    return None if any(hmac.compare_digest(expected, sig) for sig in offered) else "bad signature"


@dataclass
class World:
    """The outside systems one platform talks to."""

    stripe: StripeFront
    stripe_webhook_secret: str
    qbo_sim: quickbooks.Simulator
    qbo: InProcessApp
    xero_sim: xero.Simulator
    xero: InProcessApp
    smtp_port: int
    smtp_web: str
    smtp: subprocess.Popen

    @classmethod
    async def start(cls, localstripe: str, root: Path) -> "World":
        stripe = await StripeFront(localstripe).start()
        qbo_sim = quickbooks.Simulator()
        qbo = await InProcessApp(quickbooks.create_app(qbo_sim)).start()
        xero_sim = xero.Simulator()
        xero_app = await InProcessApp(xero.create_app(xero_sim)).start()
        smtp_port, web_port = free_port(), free_port()
        smtp = subprocess.Popen([sys.executable, "-m", "payloop.simulators.smtp_sink", "--port", str(web_port),
                                 "--smtp-port", str(smtp_port)], stdout=open(root / "smtp-sink.log", "ab"),
                                stderr=subprocess.STDOUT)
        return cls(stripe, "whsec_" + uuid.uuid4().hex, qbo_sim, qbo, xero_sim, xero_app, smtp_port,
                   f"http://127.0.0.1:{web_port}", smtp)

    async def stop(self) -> None:
        await self.stripe.stop()
        await self.qbo.stop()
        await self.xero.stop()
        self.smtp.terminate()
        self.smtp.wait(10)


# --- the platform --------------------------------------------------------------------------------------

@dataclass
class Platform:
    infra: Any
    world: World
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    ports: dict[str, int] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    logs: Path | None = None

    def env(self) -> dict[str, str]:
        qbo, xero_url, world = self.world.qbo.url, self.world.xero.url, self.world
        return {
            **self.infra.env(),
            **{spec.database_url_env: self.databases[spec.name] for spec in SERVICES},
            # Whatever other tests left in this process's environment, these processes get ours.
            "PAYLOOP_RUN_CONSUMERS": "true", "PAYLOOP_RUN_RELAY": "true", "PAYLOOP_LOG_JSON": "true",
            "PAYLOOP_CONSUMER_SESSION_TIMEOUT_MS": "6000",
            "PAYLOOP_STRIPE_API_BASE": world.stripe.url, "PAYLOOP_STRIPE_API_KEY": STRIPE_KEY,
            "PAYLOOP_STRIPE_WEBHOOK_SECRET": world.stripe_webhook_secret, "PAYLOOP_STRIPE_TIMEOUT_S": "5",
            "PAYLOOP_PAYMENTS_RUN_SCHEDULER": "true", "PAYLOOP_PAYMENTS_SCHEDULER_INTERVAL_S": "0.5",
            "PAYLOOP_PAYMENTS_PUBLIC_URL": self.url("payments"),
            "PAYLOOP_GL_QUICKBOOKS_API_BASE": qbo, "PAYLOOP_GL_QUICKBOOKS_AUTH_URL": f"{qbo}/connect/oauth2",
            "PAYLOOP_GL_QUICKBOOKS_TOKEN_URL": f"{qbo}/oauth2/v1/tokens/bearer",
            "PAYLOOP_GL_XERO_API_BASE": f"{xero_url}/api.xro/2.0",
            "PAYLOOP_GL_XERO_AUTH_URL": f"{xero_url}/identity/connect/authorize",
            "PAYLOOP_GL_XERO_TOKEN_URL": f"{xero_url}/connect/token",
            "PAYLOOP_GL_XERO_CONNECTIONS_URL": f"{xero_url}/connections",
            "PAYLOOP_GL_POLL_INTERVAL_S": "0.2", "PAYLOOP_GL_DEPENDENCY_RETRY_S": "0.3",
            "PAYLOOP_GL_TRANSIENT_RETRY_S": "0.5", "PAYLOOP_GL_HTTP_TIMEOUT_S": "5",
            "PAYLOOP_COLLECTIONS_SMTP_PORT": str(world.smtp_port),
            "PAYLOOP_COLLECTIONS_CHECKOUT_BASE_URL": f"{self.url('payments')}/checkout",
            "PAYLOOP_COLLECTIONS_PUBLIC_BASE_URL": self.url("collections"),
        }

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def start(self) -> "Platform":
        self.logs = self.infra.root / f"e2e-{self.run}"
        self.logs.mkdir()
        for spec in SERVICES:
            definition = importlib.import_module(f"{spec.module}.service").SERVICE
            self.databases[spec.name] = await self.infra.fresh_database(spec.name, definition.migrations_dir)
            self.ports[spec.name] = free_port()
        for spec in SERVICES:
            self.spawn(spec.name)
        await self.wait_ready(*self.ports)
        # As in `payloop dev`: the sandbox (and localstripe behind it) post their events to payments.
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{self.world.stripe.url}/_config/webhooks/payloop", data={
                "url": f"{self.url('payments')}/webhooks/stripe", "secret": self.world.stripe_webhook_secret})
            assert answer.status_code == 200, answer.text
        return self

    def spawn(self, name: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, str(HERE / "serve.py"), name, self.run, "serve", "--port", str(self.ports[name])],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT)

    async def wait_ready(self, *names: str) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            for name in names:
                async def ready(name=name) -> bool:
                    if self.procs[name].poll() is not None:
                        raise AssertionError(f"{name} exited with {self.procs[name].returncode}:\n{self.log_tail(name)}")
                    try:
                        return (await http.get(f"{self.url(name)}/readyz")).status_code == 200
                    except httpx.HTTPError:
                        return False
                await wait_for(ready, f"{name} to be ready", timeout=90)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hook runs, whatever was in flight is cut off."""
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    async def restart(self, name: str) -> None:
        self.spawn(name)
        await self.wait_ready(name)

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.logs / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def api(self, name: str, tenant: str) -> httpx.AsyncClient:
        token = mint_token(tenant, ["admin"])
        return httpx.AsyncClient(base_url=self.url(name), headers={"Authorization": f"Bearer {token}"}, timeout=30)


# --- one MSP on the platform ----------------------------------------------------------------------------

@dataclass
class Msp:
    """A tenant with its PSA (a ConnectWise simulator of its own), QuickBooks company and a partner endpoint."""

    platform: Platform
    cw: ConnectWiseSimulator
    partner: PartnerReceiver
    tenant: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex[:8]}")
    realm: str = ""
    connection_id: str = ""

    def api(self, name: str) -> httpx.AsyncClient:
        return self.platform.api(name, self.tenant)

    async def onboard(self) -> None:
        """Profile, partner endpoint, QuickBooks (consent, connection, mapping) and the PSA connection."""
        await self.onboard_tenant()
        await self.connect_quickbooks()
        await self.connect_psa({
            "source": "connectwise", "name": "CW", "base_url": self.cw.api_url, "poll_interval_s": 3600,
            "credentials": {"company_id": COMPANY_ID, "public_key": PUBLIC_KEY, "private_key": PRIVATE_KEY,
                            "client_id": CLIENT_ID},
            "settings": {"backoff_initial_s": 0.05, "timeout_s": 5}})

    async def onboard_tenant(self) -> None:
        async with self.api("tenants") as tenants:
            answer = await tenants.put(f"/v1/tenants/{self.tenant}", json={
                "name": "E2E MSP", "timezone": "UTC", "currency": "USD"})
            assert answer.status_code < 300, answer.text
            answer = await tenants.post("/v1/webhook-endpoints", json={
                "url": self.partner.url, "description": "partner", "event_types": ["payment.settled", "payout.paid"]})
            assert answer.status_code == 201, answer.text
            self.partner.secret = answer.json()["secret"]

    async def connect_psa(self, connection: dict) -> None:
        async with self.api("psa_ingest") as psa:
            answer = await psa.post("/v1/psa/connections", json=connection)
            assert answer.status_code == 201, answer.text
            self.connection_id = answer.json()["id"]

    async def connect_quickbooks(self) -> None:
        qbo = self.platform.world.qbo.url
        self.realm = self.platform.world.qbo_sim.create_company(f"{self.tenant} books").realm_id
        async with httpx.AsyncClient(base_url=qbo) as http:
            consent = await http.get("/connect/oauth2", params={
                "client_id": "payloop-dev", "redirect_uri": "http://127.0.0.1/cb", "response_type": "code",
                "scope": "com.intuit.quickbooks.accounting", "state": "e2e", "realmId": self.realm})
            code = parse_qs(urlparse(consent.headers["location"]).query)["code"][0]
        async with self.api("gl_posting") as gl:
            answer = await gl.put("/v1/gl/connection", json={"system": "quickbooks", "company_id": self.realm,
                                                               "authorization_code": code,
                                                               "redirect_uri": "http://127.0.0.1/cb"})
            assert answer.status_code == 202, answer.text

            async def connected():
                return (await gl.get("/v1/gl/connection")).json()["status"] == "connected"
            await wait_for(connected, "gl_posting to connect to QuickBooks")
            accounts = await self.qbo_accounts()
            items = (await self.books())["entities"]["Item"]
            answer = await gl.put("/v1/gl/account-mapping", json={
                "clearing_account_id": accounts["Undeposited Funds"]["Id"],
                "bank_account_id": accounts["Checking"]["Id"],
                "fee_account_id": accounts["Merchant Processing Fees"]["Id"],
                "refunds_account_id": accounts["Refunds and Chargebacks"]["Id"], "refund_item_id": items[0]["Id"],
                "convenience_fee_account_id": accounts["Card Convenience Fees"]["Id"]})
            assert answer.status_code == 200, answer.text

    def clean_client(self) -> int:
        """The one ConnectWise company the seed left without void, credit or dispute, its past invoices
        paid: a client whose only debt is what the test bills next."""
        company_id = list(self.cw.state.companies)[3]
        for invoice in [i for i in self.cw.state.invoices.values() if i["company"]["id"] == company_id]:
            self.cw.update_invoice(invoice["id"], payments=invoice["total"])
        return company_id

    def bill(self, company_id: int, lines: list[tuple[str, str, str, str]], due: date | None = None) -> dict:
        """A new ConnectWise invoice, due today unless told otherwise."""
        invoice = self.cw.new_invoice(company_id, lines)
        self.cw.update_invoice(invoice["id"], dueDate=f"{(due or today()).isoformat()}T00:00:00Z")
        return invoice

    async def ledger_entries(self, *expected: tuple[str, str]) -> list[dict]:
        """gl_posting's entries once they are exactly `expected` as (purpose, state) pairs: an entry is marked
        posted just after the accounting system answers, so the books may show it a moment earlier."""
        async def settled():
            async with self.api("gl_posting") as gl:
                found = (await gl.get("/v1/gl/entries", params={"limit": 200})).json()["items"]
            return found if sorted((e["purpose"], e["state"]) for e in found) == sorted(expected) else None
        return await wait_for(settled, f"gl_posting's entries to be {sorted(expected)}")

    async def books(self) -> dict:
        async with httpx.AsyncClient(base_url=self.platform.world.qbo.url) as http:
            return (await http.get(f"/_sim/companies/{self.realm}")).json()

    async def qbo_faults(self, **faults) -> None:
        async with httpx.AsyncClient(base_url=self.platform.world.qbo.url) as http:
            (await http.post(f"/_sim/companies/{self.realm}/faults", json=faults)).raise_for_status()

    async def qbo_accounts(self) -> dict[str, dict]:
        return {a["Name"]: a for a in (await self.books())["entities"]["Account"]}

    async def invoice_in_books(self, number: str, customer: str, amount_minor: int) -> None:
        """The MSP's accounting already holds its PSA invoices (their own PSA-to-books integration)."""
        async with httpx.AsyncClient(base_url=self.platform.world.qbo.url) as http:
            answer = await http.post(f"/_sim/companies/{self.realm}/invoices", json={
                "doc_number": number, "customer": customer, "amount": f"{amount_minor // 100}.{amount_minor % 100:02d}"})
            assert answer.status_code == 200, answer.text

    async def sync(self) -> dict:
        async with self.api("psa_ingest") as psa:
            async def synced():
                answer = await psa.post(f"/v1/psa/connections/{self.connection_id}/sync", json={})
                # 409: psa_ingest's poller is syncing this connection (a new one is due at once); ours follows.
                return None if answer.status_code == 409 else answer
            answer = await wait_for(synced, "psa_ingest to run a sync")
            assert answer.status_code == 200 and answer.json()["status"] == "succeeded", answer.text
            return answer.json()

    async def psa_record(self, kind: str, external_id: str) -> dict:
        async with self.api("psa_ingest") as psa:
            cursor = None
            while True:
                page = (await psa.get("/v1/psa/records", params={"kind": kind, "limit": 500,
                                                                 **({"cursor": cursor} if cursor else {})})).json()
                for record in page["items"]:
                    if record["external_id"] == external_id:
                        return record
                cursor = page["next_cursor"]
                if not cursor:
                    raise AssertionError(f"no {kind} {external_id} in psa_ingest")

    async def save_card(self, client_id: str, card: str = "pm_card_visa") -> dict:
        """What the browser does with Stripe.js: confirm the SetupIntent at Stripe, then register the method.
        The answer carries Stripe's id of the method too (`stripe_payment_method_id`)."""
        return await self._save_method(client_id, "card", {"payment_method": card})

    async def save_bank_account(self, client_id: str, account: str = "000123456789") -> dict:
        """A bank account entered by hand (Stripe's test routing number), verified by microdeposits."""
        return await self._save_method(client_id, "ach", {
            "payment_method_data[type]": "us_bank_account",
            "payment_method_data[us_bank_account][routing_number]": "110000000",
            "payment_method_data[us_bank_account][account_number]": account,
            "payment_method_data[us_bank_account][account_holder_type]": "company",
            "payment_method_data[billing_details][name]": f"Client {client_id}",
            "mandate_data[customer_acceptance][type]": "offline"}, microdeposits=["32", "45"])

    async def _save_method(self, client_id: str, kind: str, confirmation: dict, *,
                           microdeposits: list[str] | None = None) -> dict:
        async with self.api("payments") as payments:
            setup = await payments.post(f"/v1/clients/{client_id}/setup-intents", json={"type": kind})
            assert setup.status_code == 201, setup.text
            intent_id = setup.json()["setup_intent_id"]
            async with httpx.AsyncClient(base_url=self.platform.world.stripe.url,
                                         headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as stripe:
                confirmed = await stripe.post(f"/v1/setup_intents/{intent_id}/confirm", data=confirmation)
                assert confirmed.status_code == 200, confirmed.text
                if microdeposits:
                    verified = await stripe.post(f"/v1/setup_intents/{intent_id}/verify_microdeposits",
                                                 data={"amounts[]": microdeposits})
                    assert verified.json()["status"] == "succeeded", verified.text
            saved = await payments.post(f"/v1/clients/{client_id}/payment-methods",
                                        json={"setup_intent_id": intent_id})
            assert saved.status_code == 201, saved.text
            return {**saved.json(), "stripe_payment_method_id": confirmed.json()["payment_method"]}

    async def enroll_autopay(self, client_id: str, method: dict | None = None) -> dict:
        """Once payments knows the client: a saved card (unless `method` is given) on auto-pay, charged on
        the due date. Returns the method."""
        async with self.api("payments") as payments:
            async def client_known():
                answer = await payments.get(f"/v1/clients/{client_id}/invoices")
                return answer.status_code == 200 and answer.json()
            await wait_for(client_known, "payments to learn of the client")
            method = method or await self.save_card(client_id)
            answer = await payments.put(f"/v1/clients/{client_id}/autopay",
                                        json={"payment_method_id": method["id"], "rule": "on_due"})
            assert answer.status_code == 200, answer.text
            return method

    async def payments_clock(self, **move) -> dict:
        """Move the payments service's clock (`now`, `advance_seconds`): it is the whole process's."""
        async with self.api("payments") as payments:
            answer = await payments.put("/v1/payments/clock", json=move)
            assert answer.status_code == 200, answer.text
            return answer.json()

    async def deliver_stripe_event(self, event: dict) -> dict:
        body = json.dumps(event).encode()
        async with httpx.AsyncClient(base_url=self.platform.url("payments")) as http:
            answer = await http.post("/webhooks/stripe", content=body, headers={
                "Content-Type": "application/json",
                "Stripe-Signature": stripe_signature(body, self.platform.world.stripe_webhook_secret)})
            assert answer.status_code == 200, answer.text
            return answer.json()


def today() -> date:
    return datetime.now(UTC).date()  # the test tenants run on UTC
