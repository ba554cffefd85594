"""Benchmark of the event backbone: outbox -> relay -> broker -> consumer runtime -> inbox + effect.

Real parts, on a private embedded PostgreSQL and Tansu: the tenants service's outbox feeds the
payments service's consumer (its tenant-profile handler), both in this process. Prints
- outbox write rate (events committed per second, 500 per transaction),
- end-to-end throughput (first write to last effect committed),
- end-to-end latency of single events written one at a time (outbox commit to effect commit,
  both stamped by the same PostgreSQL clock): p50, p95, p99.
Run: `.venv/bin/python bench/backbone_bench.py [--events N]` (also `make bench`).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg


async def main(events: int, singles: int) -> None:
    from payloop.consumer import ConsumerRuntime
    from payloop.db import asyncpg_dsn, make_engine, make_session_factory
    from payloop.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
    from payloop.events import new_event
    from payloop.kafka import ensure_topics, make_producer
    from payloop.migrations import ensure_database, upgrade
    from payloop.outbox import OutboxRelay, publish, publish_many
    from payloop.settings import platform_settings
    from payloop_payments.service import SERVICE as PAYMENTS
    from payloop_tenants.service import SERVICE as TENANTS

    root = Path(tempfile.mkdtemp(prefix="payloop-bench-"))
    postgres = EmbeddedPostgres(root / "pg", free_port(), durable=True)
    broker = EmbeddedBroker(root / "broker", free_port())
    postgres.start()
    broker.start()
    os.environ.update(PAYLOOP_KAFKA_BOOTSTRAP=broker.bootstrap, PAYLOOP_ENV="dev",
                      PAYLOOP_LOG_LEVEL="WARNING", PAYLOOP_CONSUMER_FETCH_MAX_WAIT_MS="10")
    platform_settings.cache_clear()
    settings = platform_settings()
    from payloop.logging import configure_logging
    configure_logging("bench", "WARNING")
    stop = asyncio.Event()
    try:
        source_url, sink_url = postgres.url("bench_tenants"), postgres.url("bench_payments")
        for url, service in ((source_url, TENANTS), (sink_url, PAYMENTS)):
            await ensure_database(url)
            await asyncio.to_thread(upgrade, service.migrations_dir, url)
        await ensure_topics()
        source, sink = make_engine(source_url), make_engine(sink_url)
        producer = make_producer()
        await producer.start()
        relay = OutboxRelay("tenants", asyncpg_dsn(source_url), producer, settings)
        consumer = ConsumerRuntime("bench", dict(PAYMENTS.handlers), make_session_factory(sink), producer, settings)
        tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(consumer.run(stop))]
        sink_conn = await asyncpg.connect(asyncpg_dsn(sink_url))
        source_conn = await asyncpg.connect(asyncpg_dsn(source_url))

        def event(tenant: str):
            return new_event("tenant.updated", tenant_id=tenant, producer="tenants",
                             data={"tenant_id": tenant, "name": "Bench MSP", "timezone": "UTC", "currency": "USD"})

        async def applied() -> int:
            return await sink_conn.fetchval("SELECT count(*) FROM tenant_profiles")

        # Warm-up: the group join (seconds on Tansu) is not what we measure.
        factory = make_session_factory(source)
        async with factory() as session, session.begin():
            await publish(session, event("warmup"))
        while await applied() < 1:
            await asyncio.sleep(0.05)

        print(f"backbone bench: {events} events, then {singles} single events", flush=True)
        started = time.perf_counter()
        batch = [event(f"t{n}") for n in range(events)]
        for i in range(0, events, 500):
            async with factory() as session, session.begin():
                await publish_many(session, batch[i:i + 500])
        written = time.perf_counter() - started
        last_report = 0.0
        while (done := await applied()) < events + 1:
            if time.perf_counter() - last_report > 2:
                print(f"  applied {done - 1:>7}/{events}", flush=True)
                last_report = time.perf_counter()
            await asyncio.sleep(0.05)
        total = time.perf_counter() - started
        print(f"  outbox writes:        {events / written:>10,.0f} events/s")
        print(f"  end-to-end throughput: {events / total:>9,.0f} events/s ({total:.1f} s for {events})")

        tenants = []
        for n in range(singles):
            tenant = f"single-{uuid.uuid4().hex[:8]}"
            tenants.append(tenant)
            async with factory() as session, session.begin():
                await publish(session, event(tenant))
            await asyncio.sleep(0.02)
        while await applied() < events + 1 + singles:
            await asyncio.sleep(0.1)
        created = dict(await source_conn.fetch(
            "SELECT convert_from(payload, 'UTF8')::jsonb->>'tenant_id', created_at FROM outbox "
            "WHERE convert_from(payload, 'UTF8')::jsonb->>'tenant_id' = ANY($1)", tenants))
        effected = dict(await sink_conn.fetch(
            "SELECT tenant_id, updated_at FROM tenant_profiles WHERE tenant_id = ANY($1)", tenants))
        latencies = sorted((effected[t] - created[t]).total_seconds() * 1000 for t in tenants)
        q = statistics.quantiles(latencies, n=100)
        print(f"  single-event latency: p50 {q[49]:.1f} ms, p95 {q[94]:.1f} ms, p99 {q[98]:.1f} ms "
              f"(fetch_max_wait_ms={settings.consumer_fetch_max_wait_ms})")
        await sink_conn.close()
        await source_conn.close()
        stop.set()
        await asyncio.gather(*tasks)
        await producer.stop()
        await source.dispose()
        await sink.dispose()
    finally:
        stop.set()
        broker.stop()
        postgres.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--singles", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.singles))
