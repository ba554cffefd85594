"""Ingestion: invoices per second from ConnectWise pages to rows in reporting's read model.

One ConnectWise simulator process serves a generated book (`--companies`, `--invoices`); each of
`tenants` MSPs gets a PSA connection to it, so the platform holds tenants x invoices invoices of
tenants x companies clients. The clock starts before the connections are created and stops when
reporting's `invoices` table holds every one of them: psa_ingest pages through the PSA (1,000 a page,
the vendor's maximum), stores each page and writes its events to the outbox in one transaction, the
relay publishes them, and five consumers (reporting among them) apply them.

Freshness under this load comes with it: for each `invoice.created`, from the start of psa_ingest's
page transaction (the outbox row's `created_at`) to reporting's inbox commit (the read-model change
commits with the inbox row): an upper bound by the length of the page's transaction.
"""
from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from zoneinfo import ZoneInfo

import asyncpg
import httpx

from payloop.auth import mint_token
from payloop.embedded import free_port, stop_process, wait_for_port
from payloop.simulators.connectwise import API_ROOT, CLIENT_ID, COMPANY_ID, PRIVATE_KEY, PUBLIC_KEY
from results import summary_ms
from stack import Stack

CONSUMERS = ("tenants", "payments", "collections", "gl_posting", "reporting")
# Every bench tenant's; a date "today" for its invoices is this zone's day, not the machine's.
TENANT_TIMEZONE = ZoneInfo("America/New_York")

def admin(stack: Stack, service: str, tenant: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.url(service), timeout=None,
                             headers={"Authorization": f"Bearer {mint_token(tenant, ['admin'])}"})


async def onboard(stack: Stack, tenant: str) -> None:
    async with admin(stack, "tenants", tenant) as tenants:
        answer = await tenants.put(f"/v1/tenants/{tenant}", json={
            "name": f"Bench MSP {tenant}", "timezone": TENANT_TIMEZONE.key, "currency": "USD"})
        if answer.status_code >= 300:
            raise RuntimeError(f"tenant {tenant}: {answer.status_code} {answer.text[:300]}")


async def connect_psa(stack: Stack, tenant: str, api_url: str) -> str:
    async with admin(stack, "psa_ingest", tenant) as psa:
        answer = await psa.post("/v1/psa/connections", json={
            "source": "connectwise", "name": "ConnectWise", "base_url": api_url, "poll_interval_s": 86_400,
            "credentials": {"company_id": COMPANY_ID, "public_key": PUBLIC_KEY, "private_key": PRIVATE_KEY,
                            "client_id": CLIENT_ID},
            "settings": {"page_size": 1000, "timeout_s": 120}})
        if answer.status_code != 201:
            raise RuntimeError(f"connection of {tenant}: {answer.status_code} {answer.text[:300]}")
        return answer.json()["id"]


async def sync(stack: Stack, tenant: str, connection_id: str) -> None:
    """Sync now; a 409 means psa_ingest's poller took the new connection first, which is as good."""
    async with admin(stack, "psa_ingest", tenant) as psa:
        answer = await psa.post(f"/v1/psa/connections/{connection_id}/sync", json={})
        if answer.status_code not in (200, 409):
            raise RuntimeError(f"sync of {tenant}: {answer.status_code} {answer.text[:300]}")
        if answer.status_code == 200 and answer.json()["status"] != "succeeded":
            raise RuntimeError(f"sync of {tenant} failed: {answer.json().get('error')}")


async def run(stack: Stack, *, tenants: int, companies: int, invoices: int, timeout_s: float,
              drain_timeout_s: float) -> dict:
    port = free_port()
    log = open(stack.root / "connectwise.log", "ab")
    started = time.perf_counter()
    sim = subprocess.Popen(
        [sys.executable, "-m", "payloop.simulators.connectwise", "--port", str(port),
         "--companies", str(companies), "--invoices", str(invoices)], stdout=log, stderr=log)
    try:
        wait_for_port("127.0.0.1", port, 300, sim, "ConnectWise simulator")
        print(f"  ConnectWise simulator: {companies:,} companies, {invoices:,} invoices "
              f"(generated in {time.perf_counter() - started:.1f}s)", flush=True)
        api_url = f"http://127.0.0.1:{port}{API_ROOT}"
        names = [f"bench-ingest-{n:02d}-{uuid.uuid4().hex[:6]}" for n in range(tenants)]
        await asyncio.gather(*(onboard(stack, t) for t in names))
        expected = tenants * invoices
        reporting = await asyncpg.connect(stack.dsn("reporting"))
        psa_db = await asyncpg.connect(stack.dsn("psa_ingest"))
        try:
            started = time.perf_counter()
            connections = [await connect_psa(stack, t, api_url) for t in names]
            syncs = asyncio.gather(*(sync(stack, t, c) for t, c in zip(names, connections)))
            visible = await _wait_visible(stack, reporting, psa_db, names, expected, started, timeout_s)
            elapsed = time.perf_counter() - started
            if visible < expected:
                syncs.cancel()  # cut at the time bound: the rate so far is the figure
            with contextlib.suppress(asyncio.CancelledError):
                await syncs
            # created_at: the start of psa_ingest's page transaction (the relay has rewritten the rows, so
            # their xmin is its own): latencies from it are upper bounds by that transaction's length.
            produced = {r["event_id"]: r["committed"] for r in await psa_db.fetch(
                "SELECT event_id, created_at AS committed FROM outbox "
                "WHERE topic = 'invoice.created' AND split_part(key, ':', 1) = ANY($1)", names)}  # key: tenant:client
            freshness = latency_summary(*await hop_samples(reporting, produced))
        finally:
            await reporting.close()
            await psa_db.close()
        # Before the next part: every consumer, not only reporting, must have worked through this backlog.
        caught_up = await wait_applied(stack, CONSUMERS, list(produced), drain_timeout_s)
    finally:
        stop_process(sim)
    return {"tenants": tenants, "companies_per_tenant": companies, "invoices": expected, "visible": visible,
            "complete": visible >= expected, "seconds": elapsed, "invoices_per_s": visible / elapsed,
            "freshness_under_load": freshness,
            "consumers_caught_up_s": caught_up}


async def wait_applied(stack: Stack, services: list[str] | tuple[str, ...], ids: list[uuid.UUID],
                       timeout_s: float) -> dict[str, float | None]:
    """Wait (at most `timeout_s`) until each service applied every event of `ids`, so what follows does
    not measure this backlog. Returns the seconds each took, None for those not done in time."""
    caught_up: dict[str, float | None] = {}
    started = time.monotonic()
    last_report = started
    conns = {s: await asyncpg.connect(stack.dsn(s)) for s in services}
    try:
        while True:
            behind = {}
            for service, conn in conns.items():
                if service in caught_up:
                    continue
                done = await conn.fetchval("SELECT count(DISTINCT event_id) FROM inbox WHERE event_id = ANY($1::uuid[])",
                                           ids)
                if done >= len(ids):
                    caught_up[service] = time.monotonic() - started
                else:
                    behind[service] = done
            if not behind:
                return caught_up
            if time.monotonic() - started > timeout_s:
                print(f"  not caught up after {timeout_s:.0f}s: "
                      + ", ".join(f"{s} {n:,}/{len(ids):,}" for s, n in behind.items()), flush=True)
                return {**caught_up, **{s: None for s in behind}}
            if time.monotonic() - last_report >= 10:
                stack.check_alive()
                print("  waiting for consumers to catch up: "
                      + ", ".join(f"{s} {n:,}/{len(ids):,}" for s, n in behind.items()), flush=True)
                last_report = time.monotonic()
            await asyncio.sleep(2)
    finally:
        for conn in conns.values():
            await conn.close()


async def _wait_visible(stack: Stack, reporting: asyncpg.Connection, psa_db: asyncpg.Connection,
                        tenants: list[str], expected: int, started: float, timeout_s: float) -> int:
    """Reporting's count of the tenants' invoices once it is `expected`, or when `timeout_s` ran out."""
    last_report = 0.0
    while True:
        visible = await reporting.fetchval("SELECT count(*) FROM invoices WHERE tenant_id = ANY($1)", tenants)
        if visible >= expected or time.perf_counter() - started > timeout_s:
            return visible
        now = time.perf_counter()
        if now - last_report >= 5:
            stack.check_alive()
            stored = await psa_db.fetchval(
                "SELECT count(*) FROM psa_records WHERE kind = 'invoice' AND tenant_id = ANY($1)", tenants)
            print(f"  {now - started:6.0f}s  psa_ingest stored {stored:>9,}  reporting shows {visible:>9,}"
                  f" / {expected:,}  ({visible / max(now - started, 1e-9):,.0f}/s)", flush=True)
            last_report = now
        await asyncio.sleep(0.5)


async def hop_samples(consumer_db: asyncpg.Connection, produced: dict) -> tuple[list[float], int]:
    """Outbox commit -> inbox commit, in ms, of each of `produced` (event id -> commit time), and how many
    were not applied yet. Those count with the time they have waited so far (a lower bound of theirs)."""
    rows = await consumer_db.fetch("SELECT event_id, pg_xact_commit_timestamp(xmin) AS committed FROM inbox "
                                   "WHERE event_id = ANY($1::uuid[])", list(produced))
    now = await consumer_db.fetchval("SELECT clock_timestamp()")
    applied = {r["event_id"]: r["committed"] for r in rows if r["committed"] is not None}
    samples = [((applied.get(event_id) or now) - committed).total_seconds() * 1000
               for event_id, committed in produced.items() if committed is not None]
    return samples, len(produced) - len(applied)


def latency_summary(samples: list[float], pending: int = 0) -> dict:
    """Percentiles; with `pending` events still unapplied they are lower bounds (`complete` false)."""
    return {**summary_ms(samples), "pending": pending, "complete": pending == 0} if samples else {"count": 0}
