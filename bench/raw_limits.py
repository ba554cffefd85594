"""The machine's raw limits, measured on the same broker and PostgreSQL the pipeline uses.

- Broker: aiokafka alone, 1.1 KB JSON events (the size of an `invoice.created`), produced in
  batches (acks=all, as our producer) while a consumer reads them back: produce rate, produce+consume
  rate (first send to last receive), and the hop latency of single events sent at a steady rate with
  the consumer's `fetch_max_wait_ms` set as the services set it.
- PostgreSQL: asyncpg `executemany` of 1,000 rows per transaction into a table shaped like the outbox.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
from aiokafka import TopicPartition

from payloop.kafka import ensure_topics, make_consumer, make_producer
from payloop.settings import platform_settings
from results import summary_ms

THROUGHPUT_TOPIC = "bench.raw.throughput"
HOP_TOPIC = "bench.raw.hop"


def _payload(n: int) -> bytes:
    body = {"id": str(uuid.uuid4()), "type": "invoice.created", "n": n, "pad": "x" * 960}
    return json.dumps(body).encode()


async def _assigned_consumer(topic: str, fetch_max_wait_ms: int):
    """A consumer of every partition of a fresh topic, without a group (no join to wait for)."""
    await ensure_topics([topic])
    consumer = make_consumer(group_id=None, fetch_max_wait_ms=fetch_max_wait_ms)
    await consumer.start()
    # ensure_topics created it with our partition count (an unknown topic would get the broker's default).
    tps = [TopicPartition(topic, p) for p in range(platform_settings().topic_partitions)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return consumer


async def broker_throughput(events: int) -> dict[str, float]:
    """Produce `events` in batches (acks=all), then consume them all: each timed on its own."""
    producer = make_producer()
    await producer.start()
    consumer = await _assigned_consumer(THROUGHPUT_TOPIC, platform_settings().consumer_fetch_max_wait_ms)
    try:
        payloads = [_payload(n) for n in range(events)]
        started = time.perf_counter()
        pending = []
        for n, payload in enumerate(payloads):
            pending.append(await producer.send(THROUGHPUT_TOPIC, payload, key=str(n % 1000).encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        produced = time.perf_counter() - started
        started, received = time.perf_counter(), 0
        while received < events:
            batches = await consumer.getmany(timeout_ms=1000, max_records=5000)
            received += sum(len(records) for records in batches.values())
        consumed = time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": events, "produce_per_s": events / produced, "consume_per_s": events / consumed}


async def broker_hop_latency(rate: float, seconds: float) -> dict[str, float]:
    """Single events at a steady rate, send to receive, in one process (one monotonic clock).

    The producer lingers 5 ms here, unlike the services' (whose relay hands over whole selections):
    single sends go best a few to a request (p99 20 against 34 ms without, on 2026-11-25), and the raw
    figure is the broker's best."""
    producer = make_producer(linger_ms=5)
    await producer.start()
    fetch_wait = platform_settings().consumer_fetch_max_wait_ms
    consumer = await _assigned_consumer(HOP_TOPIC, fetch_wait)
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    total = int(rate * seconds)

    async def consume() -> None:
        while len(latencies) < total:
            batches = await consumer.getmany(timeout_ms=1000)
            now = time.perf_counter()
            for records in batches.values():
                for record in records:
                    if record.key in sent:
                        latencies.append((now - sent.pop(record.key)) * 1000)

    try:
        reader = asyncio.create_task(consume())
        started = time.perf_counter()
        for n in range(total):
            await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
            key = f"hop-{n}".encode()
            sent[key] = time.perf_counter()
            await producer.send(HOP_TOPIC, _payload(n), key=key)
        await asyncio.wait_for(reader, 60)
    finally:
        await consumer.stop()
        await producer.stop()
    return {**summary_ms(latencies), "rate_per_s": rate, "fetch_max_wait_ms": fetch_wait}


async def postgres_inserts(dsn: str, rows: int, batch: int = 1000) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_raw_inserts")
        await conn.execute("CREATE TABLE bench_raw_inserts (seq bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE,"
                           " topic text NOT NULL, key text, payload bytea NOT NULL,"
                           " created_at timestamptz NOT NULL DEFAULT now())")
        records = [(uuid.uuid4(), "invoice.created", str(n % 1000), _payload(n)) for n in range(rows)]
        started = time.perf_counter()
        for i in range(0, rows, batch):
            async with conn.transaction():
                await conn.executemany("INSERT INTO bench_raw_inserts (event_id, topic, key, payload) "
                                       "VALUES ($1, $2, $3, $4)", records[i:i + batch])
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE bench_raw_inserts")
    finally:
        await conn.close()
    return {"rows": rows, "batch": batch, "inserts_per_s": rows / elapsed}
