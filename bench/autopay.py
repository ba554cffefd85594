"""Auto-pay run: `charges` due invoices of enrolled clients, charged by the payments scheduler against
the Stripe sandbox (localstripe behind `payloop.simulators.stripe_sandbox`) with Stripe's live-mode
rate limit enforced (100 requests/s: beyond it a 429 with Stripe's `rate_limit` error).

Set-up, not measured: one tenant; its clients (`client.upserted`) and due invoices (`invoice.created`,
open, due in the past week) written to psa_ingest's outbox and applied by payments; a card saved for
each client through payments' API and the sandbox (SetupIntent confirmed as Stripe.js would).
Measured: from the moment the clients are enrolled (`PUT /v1/clients/{id}/autopay`) until every
charge has an outcome recorded (attempt `succeeded`, `processing` or `failed`): charges per second;
per charge the time from its payment row to its recorded outcome (p50/p99: the dispatch itself), and
from the enrolment to its outcome (p50/p99: how long a due charge waited for its turn). The sandbox counts
the requests it answered and the 429s it gave, so the run says whether the processor's limit or our
code bounded it. localstripe runs without its store's copy on disk, which would otherwise slow every
request in proportion to what the run has already made.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
from aiohttp import web
from sqlalchemy.ext.asyncio import async_sessionmaker

from payloop.db import make_engine
from payloop.embedded import free_port, stop_process
from payloop.events import new_event
from payloop.outbox import publish_many
from payloop.simulators.localstripe_process import start_localstripe
from payloop.simulators.stripe_sandbox import StripeSandbox
from ingestion import CONSUMERS, TENANT_TIMEZONE, admin, onboard, wait_applied
from results import middle_rate, summary_ms
from stack import Stack

STRIPE_KEY = "sk_test_payloop_bench"
CLIENTS_MAX = 100


class CountingSandbox(StripeSandbox):
    """The sandbox, counting the API requests that reached it and the ones its limit refused."""

    answered = 0
    limited = 0

    def app(self) -> web.Application:
        app = super().app()
        app.middlewares.insert(0, self._count)  # outermost: sees the rate limiter's 429s too
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler):
        response = await handler(request)
        if request.path.startswith("/v1/"):
            if response.status == 429:
                self.limited += 1
            else:
                self.answered += 1
        return response


class Stripe:
    """localstripe (a process) and the counting sandbox in front of it (on this event loop)."""

    def __init__(self, root: Path, rate_limit: float):
        self.root, self.rate_limit = root, rate_limit
        self.localstripe = None
        self.sandbox: CountingSandbox | None = None

    async def start(self) -> "Stripe":
        port = free_port()
        self.localstripe = start_localstripe(port, self.root / "localstripe",
                                             log=open(self.root / "localstripe.log", "ab"))
        self.sandbox = await CountingSandbox(f"http://127.0.0.1:{port}", rate_limit=self.rate_limit).start()
        return self

    def env(self) -> dict[str, str]:
        return {"PAYLOOP_STRIPE_API_BASE": self.sandbox.url, "PAYLOOP_STRIPE_API_KEY": STRIPE_KEY,
                "PAYLOOP_STRIPE_WEBHOOK_SECRET": "whsec_" + uuid.uuid4().hex}

    async def stop(self) -> None:
        if self.sandbox:
            await self.sandbox.stop()
        if self.localstripe:
            stop_process(self.localstripe)


async def sandbox_alone(stripe: Stripe, *, charges: int, concurrency: int = 16) -> dict:
    """The raw limit of the auto-pay run on this machine: the Stripe sandbox (localstripe and the proxy
    in front of it, Python processes on the same cores) answering exactly the requests a charge of ours
    makes (a PaymentIntent created and confirmed off-session with a saved card, its charge's balance
    transaction expanded for the fee; the charge and its balance transaction asked for only if they
    did not come expanded), `concurrency` at once, with no Payloop code in the way."""
    async with httpx.AsyncClient(base_url=stripe.sandbox.url, timeout=60,
                                 headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as api:
        async def call(method: str, path: str, **kw) -> dict:
            for attempt in range(50):  # the sandbox's rate limit applies here too
                answer = await api.request(method, path, **kw)
                if answer.status_code != 429:
                    answer.raise_for_status()
                    return answer.json()
                await asyncio.sleep(0.05 * (attempt + 1))
            raise RuntimeError(f"{path}: still limited")
        customer = (await call("POST", "/v1/customers", data={"name": "Raw limit"}))["id"]
        intent = (await call("POST", "/v1/setup_intents", data={"customer": customer, "usage": "off_session",
                                                                "payment_method_types[]": "card"}))["id"]
        method = (await call("POST", f"/v1/setup_intents/{intent}/confirm",
                             data={"payment_method": "pm_card_visa"}))["payment_method"]
        semaphore = asyncio.Semaphore(concurrency)

        async def charge(n: int) -> None:
            async with semaphore:
                paid = await call("POST", "/v1/payment_intents", headers={"Idempotency-Key": f"raw-{uuid.uuid4()}"},
                                  data={"amount": 1_000 + n, "currency": "usd", "customer": customer,
                                        "payment_method": method, "confirm": "true", "off_session": "true",
                                        "payment_method_types[]": "card",
                                        "expand[]": "latest_charge.balance_transaction"})
                charge = paid["latest_charge"]
                if isinstance(charge, str):  # not expanded: ask for it, as the gateway would
                    charge = await call("GET", f"/v1/charges/{charge}")
                if isinstance(charge.get("balance_transaction"), str):
                    await call("GET", f"/v1/balance_transactions/{charge['balance_transaction']}")
        started = time.perf_counter()
        await asyncio.gather(*(charge(n) for n in range(charges)))
        seconds = time.perf_counter() - started
    return {"charges": charges, "concurrency": concurrency, "seconds": seconds, "charges_per_s": charges / seconds}


def _client_event(tenant: str, client_id: str, n: int):
    return new_event("client.upserted", tenant_id=tenant, client_id=client_id, producer="psa_ingest", data={
        "client_id": client_id, "psa": {"source": "connectwise", "external_id": f"ap-{n}"},
        "name": f"Auto-pay Client {n:04d}", "billing_emails": [f"ap{n}@client.example"], "terms": "Net 30",
        "timezone": "America/New_York"})


def _invoice_event(tenant: str, client_id: str, n: int):
    # Due today or up to six days ago in the tenant's day, which payments' scheduler goes by.
    issued = datetime.now(TENANT_TIMEZONE).date() - timedelta(days=30 + n % 7)
    total = 5_000 + (n * 7919) % 200_000
    return new_event("invoice.created", tenant_id=tenant, client_id=client_id, producer="psa_ingest", data={
        "invoice_id": str(uuid.uuid4()), "psa": {"source": "connectwise", "external_id": f"ap-inv-{n}"},
        "number": f"AP-{n:07d}", "agreement": None, "currency": "USD", "issued_on": issued.isoformat(),
        "due_on": (issued + timedelta(days=30)).isoformat(), "terms": "Net 30", "status": "open",
        "subtotal_minor": total, "tax_minor": 0, "total_minor": total, "balance_minor": total,
        "lines": [{"kind": "recurring", "description": "Managed services", "quantity": "1",
                   "unit_price_minor": total, "amount_minor": total}]})


async def _write_book(stack: Stack, tenant: str, clients: list[str], charges: int) -> list[uuid.UUID]:
    engine = make_engine(stack.database_url("psa_ingest"))
    factory = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with factory() as session, session.begin():
            await publish_many(session, [_client_event(tenant, c, n) for n, c in enumerate(clients)])
        ids = []
        for start in range(0, charges, 500):
            events = [_invoice_event(tenant, clients[n % len(clients)], n)
                      for n in range(start, min(charges, start + 500))]
            async with factory() as session, session.begin():
                await publish_many(session, events)
            ids += [e.id for e in events]
        return ids
    finally:
        await engine.dispose()


async def _save_card(stack: Stack, stripe: Stripe, tenant: str, client_id: str) -> str:
    """What the payer's browser does with Stripe.js, then the registration of the method."""
    async with admin(stack, "payments", tenant) as payments, httpx.AsyncClient(
            base_url=stripe.sandbox.url, headers={"Authorization": f"Bearer {STRIPE_KEY}"}) as sandbox:
        for attempt in range(20):  # the sandbox's rate limit applies to the set-up as well
            setup = await payments.post(f"/v1/clients/{client_id}/setup-intents", json={"type": "card"})
            if setup.status_code == 201:
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        else:
            raise RuntimeError(f"setup intent for {client_id}: {setup.status_code} {setup.text[:300]}")
        intent = setup.json()["setup_intent_id"]
        for attempt in range(20):
            confirmed = await sandbox.post(f"/v1/setup_intents/{intent}/confirm", data={"payment_method": "pm_card_visa"})
            if confirmed.status_code == 200:
                break
            await asyncio.sleep(0.2 * (attempt + 1))
        for attempt in range(20):
            saved = await payments.post(f"/v1/clients/{client_id}/payment-methods", json={"setup_intent_id": intent})
            if saved.status_code == 201:
                return saved.json()["id"]
            await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"payment method for {client_id}: {saved.status_code} {saved.text[:300]}")


async def _enroll(stack: Stack, tenant: str, client_id: str, method_id: str) -> None:
    async with admin(stack, "payments", tenant) as payments:
        answer = await payments.put(f"/v1/clients/{client_id}/autopay",
                                    json={"payment_method_id": method_id, "rule": "on_due"})
        if answer.status_code != 200:
            raise RuntimeError(f"auto-pay of {client_id}: {answer.status_code} {answer.text[:300]}")


async def run(stack: Stack, stripe: Stripe, *, charges: int, drain_timeout_s: float, timeout_s: float) -> dict:
    tenant = f"bench-autopay-{uuid.uuid4().hex[:6]}"
    await onboard(stack, tenant)
    clients = [str(uuid.uuid4()) for _ in range(min(CLIENTS_MAX, charges))]
    ids = await _write_book(stack, tenant, clients, charges)
    print(f"  {len(clients)} clients and {charges:,} due invoices written; waiting for payments to apply them",
          flush=True)
    await wait_applied(stack, ["payments"], ids, drain_timeout_s)
    semaphore = asyncio.Semaphore(4)

    async def save(client_id: str) -> str:
        async with semaphore:
            return await _save_card(stack, stripe, tenant, client_id)
    methods = await asyncio.gather(*(save(c) for c in clients))
    print(f"  {len(clients)} cards saved through payments and the sandbox; enrolling every client", flush=True)
    db = await asyncpg.connect(stack.dsn("payments"))
    try:
        answered, limited = stripe.sandbox.answered, stripe.sandbox.limited
        t0 = await db.fetchval("SELECT clock_timestamp()")
        started = time.perf_counter()
        await asyncio.gather(*(_enroll(stack, tenant, c, m) for c, m in zip(clients, methods)))
        done, last_report = 0, 0.0
        while time.perf_counter() - started < timeout_s:
            done = await db.fetchval("SELECT count(*) FROM payment_attempts WHERE tenant_id = $1 "
                                     "AND status <> 'created'", tenant)
            if done >= charges:
                break
            if time.perf_counter() - last_report >= 5:
                stack.check_alive()
                elapsed = time.perf_counter() - started
                print(f"  {elapsed:6.0f}s  {done:>7,} / {charges:,} charged  ({done / elapsed:,.1f}/s; Stripe "
                      f"answered {stripe.sandbox.answered - answered:,}, refused {stripe.sandbox.limited - limited:,})",
                      flush=True)
                last_report = time.perf_counter()
            await asyncio.sleep(0.5)
        requests, refused = stripe.sandbox.answered - answered, stripe.sandbox.limited - limited
        rows = await db.fetch(
            "SELECT a.status, pg_xact_commit_timestamp(a.xmin) AS recorded, p.created_at FROM payment_attempts a "
            "JOIN payments p ON p.id = a.payment_id WHERE a.tenant_id = $1 AND a.status <> 'created'", tenant)
    finally:
        await db.close()
    if not rows:
        raise RuntimeError("no charge was recorded")
    print("  letting the other consumers work through the auto-pay invoices before the next part", flush=True)
    caught_up = await wait_applied(stack, CONSUMERS, ids, drain_timeout_s)
    end = max(r["recorded"] for r in rows)
    seconds = (end - t0).total_seconds()
    latency = summary_ms([(r["recorded"] - r["created_at"]).total_seconds() * 1000 for r in rows])
    waited = summary_ms([(r["recorded"] - t0).total_seconds() * 1000 for r in rows])
    steady = middle_rate([(r["recorded"] - t0).total_seconds() for r in rows]) if len(rows) >= 10 else None
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r["status"]] = outcomes.get(r["status"], 0) + 1
    return {"charges": charges, "charged": len(rows), "complete": len(rows) >= charges, "seconds": seconds,
            "charges_per_s": len(rows) / seconds, "charges_per_s_middle_80": steady, "dispatch_p50_ms": latency["p50_ms"],
            "dispatch_p99_ms": latency["p99_ms"], "enrolled_to_outcome_p50_ms": waited["p50_ms"],
            "enrolled_to_outcome_p99_ms": waited["p99_ms"], "outcomes": outcomes, "stripe_requests": requests,
            "stripe_refused_429": refused, "stripe_requests_per_s": requests / seconds,
            "stripe_requests_per_charge": requests / len(rows), "rate_limit_per_s": stripe.rate_limit,
            "clients": len(clients), "consumers_caught_up_s": caught_up}
