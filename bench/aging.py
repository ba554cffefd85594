"""Aging endpoint latency at 1,000,000 invoices, over real HTTP.

    .venv/bin/python bench/aging.py [--invoices 1000000] [--tenants 100] [--requests 2000]

(`payloop bench` runs it as one part of the whole benchmark, on the benchmark's PostgreSQL.)

Starts its own embedded PostgreSQL and broker (payloop.embedded) in a temporary directory, migrates
a reporting database, loads the invoices with COPY (spread over `--tenants` MSPs of 150 clients,
over the past two years: 70% recurring invoices issued on the 1st of a month, 30% on any day; about
11% open), starts `python -m payloop_reporting
serve` as a separate process, and measures p50/p95/p99 of

- `GET /v1/aging` (the per-client roll-up the dashboard shows), and
- `GET /v1/aging/invoices` (first page, a bucket filter, and a page deep behind a cursor),

each for random tenants, one request at a time over a keep-alive connection (issue 7's target: p99
of `/v1/aging` under 50 ms).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

os.environ.setdefault("PAYLOOP_ENV", "dev")  # HS256 dev tokens, as in `payloop dev`

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from results import percentile  # noqa: E402

from payloop.auth import mint_token  # noqa: E402
from payloop.db import asyncpg_dsn  # noqa: E402
from payloop.embedded import EmbeddedBroker, EmbeddedPostgres, free_port, stop_process, wait_for_port  # noqa: E402
from payloop.migrations import ensure_database, upgrade  # noqa: E402
from payloop_reporting.service import SERVICE  # noqa: E402
from stack import peak_rss_mib  # noqa: E402

CLIENTS_PER_TENANT = 150


def tenant_name(n: int) -> str:
    return f"bench-{n:04d}"


def invoice_rows(count: int, tenants: int, seed: int = 7):
    """(tenant, invoice, client, number, currency, issued, due, status, total, psa balance, snapshot, balance)."""
    rng = random.Random(seed)
    today = date.today()
    snapshot = datetime.now(UTC)
    for n in range(count):
        tenant = tenant_name(n % tenants)
        client = f"c{rng.randrange(CLIENTS_PER_TENANT):03d}"
        if rng.random() < 0.7:  # recurring agreements bill on the 1st of the month
            year, month = divmod(today.year * 12 + today.month - 1 - rng.randrange(24), 12)
            issued = date(year, month + 1, 1)
        else:  # time and materials, projects, products: any day
            issued = today - timedelta(days=rng.randrange(730))
        due = issued + timedelta(days=30)
        total = rng.randrange(5_000, 2_500_000)
        # Most recent invoices are still open; older ones mostly paid.
        open_ = rng.random() < 0.08 or (due >= today - timedelta(days=5) and rng.random() < 0.7)
        balance = (total if rng.random() < 0.7 else total // 2) if open_ else 0
        status = "paid" if balance == 0 else ("open" if balance == total else "partially_paid")
        yield (tenant, f"inv-{n:07d}", client, f"INV-{n:07d}", "USD", issued, due, status, total, balance,
               snapshot, balance)


async def load(url: str, invoices: int, tenants: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        started = time.perf_counter()
        await conn.copy_records_to_table(
            "tenant_profiles", columns=["tenant_id", "name", "timezone", "currency", "event_id", "occurred_at"],
            records=[(tenant_name(t), f"Bench MSP {t}", "America/New_York", "USD",
                      uuid.uuid4(), datetime.now(UTC)) for t in range(tenants)])
        await conn.copy_records_to_table(
            "clients", columns=["tenant_id", "client_id", "name", "autopay_enrolled", "collection_state"],
            records=[(tenant_name(t), f"c{c:03d}", f"Client {c:03d}", c % 3 == 0,
                      ("none", "active", "escalated", "paused", "promised")[c % 5])
                     for t in range(tenants) for c in range(CLIENTS_PER_TENANT)])
        rows = invoice_rows(invoices, tenants)
        batch: list[tuple] = []
        loaded = 0
        for row in rows:
            batch.append(row)
            if len(batch) == 50_000:
                await _copy(conn, batch)
                loaded += len(batch)
                batch = []
                print(f"\r  COPY invoices {loaded:,}/{invoices:,}", end="", file=sys.stderr, flush=True)
        if batch:
            await _copy(conn, batch)
            loaded += len(batch)
        print(f"\r  COPY invoices {loaded:,}/{invoices:,} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        started = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")  # fresh visibility map: index-only scans for the roll-up
        print(f"  VACUUM ANALYZE in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        open_count = await conn.fetchval("SELECT count(*) FROM invoices WHERE balance_minor > 0")
        print(f"  {invoices:,} invoices, {open_count:,} open, {tenants} tenants x {CLIENTS_PER_TENANT} clients",
              file=sys.stderr)
    finally:
        await conn.close()


async def _copy(conn: asyncpg.Connection, batch: list[tuple]) -> None:
    await conn.copy_records_to_table(
        "invoices", records=batch,
        columns=["tenant_id", "invoice_id", "client_id", "number", "currency", "issued_on", "due_on",
                 "psa_status", "total_minor", "psa_balance_minor", "snapshot_at", "balance_minor"])


async def measure(base: str, tenants: int, requests: int) -> dict[str, list[float]]:
    tokens = {tenant_name(t): {"Authorization": f"Bearer {mint_token(tenant_name(t), ['ar:read'])}"}
              for t in range(tenants)}
    rng = random.Random(11)
    results: dict[str, list[float]] = {}
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        deep_cursors = {}
        for tenant, headers in tokens.items():  # a cursor 5 pages deep for each tenant, for the deep-page case
            cursor = None
            for _ in range(5):
                page = (await client.get("/v1/aging/invoices", params={"limit": 50, **({"cursor": cursor} if cursor else {})},
                                         headers=headers)).json()
                cursor = page["next_cursor"] or cursor
            deep_cursors[tenant] = cursor

        cases = {
            "GET /v1/aging": lambda t: ("/v1/aging", {}),
            "GET /v1/aging/invoices": lambda t: ("/v1/aging/invoices", {"limit": 50}),
            "GET /v1/aging/invoices?bucket=d90_plus&sort=balance": lambda t: (
                "/v1/aging/invoices", {"limit": 50, "bucket": "d90_plus", "sort": "balance", "order": "desc"}),
            "GET /v1/aging/invoices (5 pages deep)": lambda t: (
                "/v1/aging/invoices", {"limit": 50, "cursor": deep_cursors[t]}),
        }
        for name, request in cases.items():
            for _ in range(50):  # warm the connection pool and the caches
                tenant = rng.choice(list(tokens))
                path, params = request(tenant)
                await client.get(path, params=params, headers=tokens[tenant])
            samples = []
            for _ in range(requests):
                tenant = rng.choice(list(tokens))
                path, params = request(tenant)
                started = time.perf_counter()
                response = await client.get(path, params=params, headers=tokens[tenant])
                samples.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    raise SystemExit(f"{name}: {response.status_code} {response.text[:200]}")
            results[name] = samples
    return results


def run(postgres: EmbeddedPostgres, bootstrap: str, *, invoices: int, tenants: int, requests: int,
        logs: Path) -> dict:
    """Load a fresh `bench_aging` database on `postgres`, serve it with reporting, measure every case."""
    url = postgres.url("bench_aging")
    asyncio.run(ensure_database(url))
    upgrade(SERVICE.migrations_dir, url)
    asyncio.run(load(url, invoices, tenants))
    port = free_port()
    env = {**os.environ, "PAYLOOP_REPORTING_DATABASE_URL": url, "PAYLOOP_KAFKA_BOOTSTRAP": bootstrap,
           "PAYLOOP_RUN_CONSUMERS": "false", "PAYLOOP_RUN_RELAY": "false", "PAYLOOP_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "payloop_reporting", "serve", "--port", str(port)], env=env,
                              stdout=open(logs / "reporting-aging.log", "ab"), stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, 60, server, "reporting")
        samples = asyncio.run(measure(f"http://127.0.0.1:{port}", tenants, requests))
        rss = peak_rss_mib(server.pid)
    finally:
        stop_process(server)
    cases = {name: {"p50_ms": percentile(ms, 50), "p95_ms": percentile(ms, 95), "p99_ms": percentile(ms, 99),
                    "mean_ms": statistics.fmean(ms), "count": len(ms)} for name, ms in samples.items()}
    return {"invoices": invoices, "tenants": tenants, "requests_per_case": requests, "cases": cases,
            "reporting_peak_rss_mib": rss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000, help="measured requests per case")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="payloop-bench-"))
    postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=False)
    broker = EmbeddedBroker(root / "broker", free_port())
    try:
        print(f"starting PostgreSQL and the broker under {root}", file=sys.stderr)
        postgres.start()
        broker.start()
        result = run(postgres, broker.bootstrap, invoices=args.invoices, tenants=args.tenants,
                     requests=args.requests, logs=root)
    finally:
        broker.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)

    print(f"\n{'case':<52} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8}  (ms, {args.requests} requests each)")
    for name, case in result["cases"].items():
        print(f"{name:<52} {case['p50_ms']:8.2f} {case['p95_ms']:8.2f} {case['p99_ms']:8.2f} {case['mean_ms']:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
