"""Event hop latency at a steady rate, and reporting's freshness, on the running platform.

`invoice.created` events are written into psa_ingest's outbox at a steady `rate` per second (a
transaction every 20 ms, through `payloop.outbox.publish_many`, as psa_ingest's own sync writes
them), for one tenant of 200 clients. psa_ingest's relay publishes them; tenants, payments,
collections, gl_posting and reporting consume them in their own processes. Per consumer: the writing
transaction's commit to the inbox row's (`pg_xact_commit_timestamp` of each; the writer notes its
transaction ids, since the relay rewrites the outbox rows when it marks them sent). Reporting's figure is the read
model's freshness (issue 7: updated within a second).
"""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import date, datetime, timedelta

import asyncpg
from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker

from payloop.db import make_engine
from payloop.events import new_event
from payloop.outbox import publish_many
from ingestion import CONSUMERS, hop_samples, latency_summary, onboard, wait_applied
from stack import Stack

TICK_S = 0.02


def invoice_event(tenant: str, client: str, n: int):
    invoice_id = str(uuid.uuid4())
    issued = date.today() - timedelta(days=n % 60)
    total = 10_000 + (n * 7919) % 490_000
    return new_event("invoice.created", tenant_id=tenant, client_id=client, producer="psa_ingest", data={
        "invoice_id": invoice_id, "psa": {"source": "connectwise", "external_id": f"hop-{n}"},
        "number": f"HOP-{n:07d}", "agreement": None, "currency": "USD", "issued_on": issued.isoformat(),
        "due_on": (issued + timedelta(days=30)).isoformat(), "terms": "Net 30", "status": "open",
        "subtotal_minor": total, "tax_minor": 0, "total_minor": total, "balance_minor": total,
        "lines": [{"kind": "product", "description": "Bench line", "quantity": "1", "unit_price_minor": total,
                   "amount_minor": total}]})


async def run(stack: Stack, *, rate: int, seconds: float, drain_timeout_s: float) -> dict:
    tenant = f"bench-hop-{uuid.uuid4().hex[:6]}"
    await onboard(stack, tenant)
    clients = [str(uuid.uuid4()) for _ in range(200)]
    engine = make_engine(stack.database_url("psa_ingest"))
    factory = async_sessionmaker(engine, expire_on_commit=False)
    await _warm_up(stack, factory, tenant, clients[0], drain_timeout_s)
    total = int(rate * seconds)
    ids: list[uuid.UUID] = []
    transaction_of: dict[uuid.UUID, str] = {}
    print(f"  writing {total:,} invoice.created at {rate}/s into psa_ingest's outbox (a transaction every "
          f"{TICK_S * 1000:.0f} ms with the events due by then)", flush=True)
    started = time.perf_counter()
    try:
        tick, last_report = 0, started
        while len(ids) < total:
            await asyncio.sleep(max(0.0, started + tick * TICK_S - time.perf_counter()))
            # What is due by now, so a slow tick (a busy machine) is made up by the next, not lost.
            due = min(total, int((time.perf_counter() - started) * rate)) - len(ids)
            events = [invoice_event(tenant, clients[(len(ids) + k) % len(clients)], len(ids) + k)
                      for k in range(due)]
            if events:
                async with factory() as session, session.begin():
                    await publish_many(session, events)
                    xact = await session.scalar(text("SELECT pg_current_xact_id()::text"))
                ids += [e.id for e in events]
                transaction_of.update((e.id, xact) for e in events)
            tick += 1
            if time.perf_counter() - last_report >= 5:
                print(f"  {time.perf_counter() - started:5.0f}s  {len(ids):,} written", flush=True)
                last_report = time.perf_counter()
        achieved = len(ids) / (time.perf_counter() - started)
    finally:
        await engine.dispose()
    psa_db = await asyncpg.connect(stack.dsn("psa_ingest"))
    try:
        # The writer's own transactions: the outbox rows' xmin is the relay's by now (it marks them sent).
        committed = {r["x"]: r["at"] for r in await psa_db.fetch(
            "SELECT x, pg_xact_commit_timestamp(x::xid) AS at FROM unnest($1::text[]) AS x",
            list(set(transaction_of.values())))}
        produced = {event_id: committed[xact] for event_id, xact in transaction_of.items()}
    finally:
        await psa_db.close()
    deadline = time.monotonic() + drain_timeout_s
    measured = {service: await _applied(stack, service, produced, deadline) for service in CONSUMERS}
    relay = await _relayed(stack, produced)
    pooled = [ms for samples, _ in measured.values() for ms in samples]
    return {"rate_per_s": rate, "achieved_rate_per_s": achieved, "events": total, "tenant": tenant,
            "relay": relay,
            "consumers": {service: latency_summary(samples, pending)
                          for service, (samples, pending) in measured.items()},
            "all_consumers": latency_summary(pooled, sum(pending for _, pending in measured.values()))}


async def _relayed(stack: Stack, produced: dict[uuid.UUID, datetime]) -> dict:
    """How long events waited in psa_ingest's outbox: their commit to the relay's acknowledged send
    (`sent_at`), so a backlog in the relay is told apart from one in the consumers."""
    conn = await asyncpg.connect(stack.dsn("psa_ingest"))
    try:
        rows = await conn.fetch("SELECT event_id, sent_at FROM outbox WHERE event_id = ANY($1) AND sent_at IS NOT NULL",
                                list(produced))
    finally:
        await conn.close()
    return latency_summary([(r["sent_at"] - produced[r["event_id"]]).total_seconds() * 1000 for r in rows],
                           len(produced) - len(rows))


async def _warm_up(stack: Stack, factory, tenant: str, client: str, timeout_s: float) -> None:
    """One event through every consumer first: their groups' first join (seconds on Tansu, BROKER.md)
    and cold caches are not what this part measures."""
    event = invoice_event(tenant, client, -1)
    async with factory() as session, session.begin():
        await publish_many(session, [event])
    await wait_applied(stack, CONSUMERS, [event.id], timeout_s)


async def _applied(stack: Stack, service: str, produced: dict, deadline: float) -> tuple[list[float], int]:
    """Wait until `service` applied every event, or the deadline (then the rest count as lower bounds)."""
    conn = await asyncpg.connect(stack.dsn(service))
    try:
        while time.monotonic() < deadline:
            done = await conn.fetchval("SELECT count(DISTINCT event_id) FROM inbox WHERE event_id = ANY($1::uuid[])",
                                       list(produced))
            if done >= len(produced):
                break
            await asyncio.sleep(0.5)
        return await hop_samples(conn, produced)
    finally:
        await conn.close()
