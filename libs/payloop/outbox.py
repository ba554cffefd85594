"""The transactional outbox: events are written with the state change, published after commit.

`publish(session, envelope)` inserts the event in the caller's transaction. `OutboxRelay` runs in the
service process: it holds a PostgreSQL advisory lock (one relay per service database, so events
leave in the order they were written), wakes on LISTEN/NOTIFY (polling as a fallback), sends a batch
with acks=all and marks rows sent only after every send in the batch was acknowledged. A crash or a
broker outage between send and mark re-sends the batch: delivery is at least once and consumers
de-duplicate by event id.
"""
from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.events.envelope import Envelope
from payloop.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISH_ERRORS, OUTBOX_PUBLISHED
from payloop.settings import PlatformSettings

log = structlog.get_logger(__name__)

NOTIFY_CHANNEL = "payloop_outbox"
_INSERT = text(
    "INSERT INTO outbox (event_id, topic, key, headers, payload) "
    "VALUES (:event_id, :topic, :key, CAST(:headers AS jsonb), :payload)"
)


async def publish(session: AsyncSession, envelope: Envelope) -> None:
    """Queue `envelope` for its topic in the caller's transaction."""
    await session.execute(_INSERT, {
        "event_id": envelope.id,
        "topic": envelope.type,
        "key": envelope.key,
        "headers": json.dumps([[k, v.decode()] for k, v in envelope.headers()]),
        "payload": envelope.to_bytes(),
    })


async def publish_many(session: AsyncSession, envelopes: list[Envelope]) -> None:
    if not envelopes:
        return
    await session.execute(_INSERT, [{
        "event_id": e.id, "topic": e.type, "key": e.key,
        "headers": json.dumps([[k, v.decode()] for k, v in e.headers()]),
        "payload": e.to_bytes(),
    } for e in envelopes])


class OutboxRelay:
    def __init__(self, service: str, dsn: str, producer: AIOKafkaProducer, settings: PlatformSettings):
        self.service = service
        self.dsn = dsn
        self.producer = producer
        self.settings = settings
        self.lock_key = f"payloop.outbox.relay.{service}"
        self._wake = asyncio.Event()
        self._last_prune = datetime.min.replace(tzinfo=UTC)
        self.is_leader = False

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; reconnects to PostgreSQL and backs off on broker errors."""
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._run_connected(stop)
                backoff = 0.2
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("outbox.relay.db_error", service=self.service, error=str(exc), retry_in_s=backoff)
                await _sleep_or_stop(stop, backoff)
                backoff = min(backoff * 2, self.settings.relay_backoff_max_s)

    async def _run_connected(self, stop: asyncio.Event) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn)
        try:
            while not stop.is_set():
                self.is_leader = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self.lock_key)
                if self.is_leader:
                    break
                await _sleep_or_stop(stop, 2.0)  # another process of this service relays; stand by
            if stop.is_set():
                return
            await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
            log.info("outbox.relay.started", service=self.service)
            await self._relay_loop(conn, stop)
        finally:
            self.is_leader = False
            await conn.close()

    def _on_notify(self, *_args) -> None:
        self._wake.set()

    async def _relay_loop(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self._relay_batch(conn)
                failures = 0
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                raise
            except Exception as exc:  # broker errors of any kind: back off, keep the rows, try again
                failures += 1
                delay = min(self.settings.relay_backoff_max_s, 0.2 * 2 ** failures) * random.uniform(0.8, 1.2)
                OUTBOX_PUBLISH_ERRORS.labels(self.service).inc()
                log.warning("outbox.relay.publish_failed", service=self.service, error=repr(exc),
                            failures=failures, retry_in_s=round(delay, 2))
                await _sleep_or_stop(stop, delay)
                continue
            if sent >= self.settings.relay_batch_size:
                continue  # more waiting: do not sleep
            await self._maybe_prune(conn)
            try:
                await asyncio.wait_for(self._wake.wait(), self.settings.relay_poll_interval_s)
            except asyncio.TimeoutError:
                pass

    async def _relay_batch(self, conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT seq, topic, key, headers, payload FROM outbox WHERE sent_at IS NULL "
                "ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.settings.relay_batch_size,
            )
            OUTBOX_BACKLOG.labels(self.service).set(len(rows))
            if not rows:
                return 0
            futures = []
            for row in rows:
                headers = [(k, v.encode()) for k, v in json.loads(row["headers"])]
                futures.append(await self.producer.send(
                    row["topic"], value=bytes(row["payload"]), key=row["key"].encode(), headers=headers,
                ))
            await asyncio.wait_for(asyncio.gather(*futures), self.settings.relay_send_timeout_s)
            await conn.execute(
                "UPDATE outbox SET sent_at = clock_timestamp() WHERE seq = ANY($1::bigint[])", [r["seq"] for r in rows]
            )
        OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        OUTBOX_BACKLOG.labels(self.service).set(backlog)
        return len(rows)

    async def _maybe_prune(self, conn: asyncpg.Connection) -> None:
        """Housekeeping of this service database's backbone tables (the relay is its one leader)."""
        now = datetime.now(UTC)
        if now - self._last_prune < timedelta(minutes=5):
            return
        self._last_prune = now
        cutoff = now - timedelta(hours=self.settings.outbox_retention_hours)
        await conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1", cutoff)
        inbox_cutoff = now - timedelta(days=self.settings.inbox_retention_days)
        await conn.execute("DELETE FROM inbox WHERE processed_at < $1", inbox_cutoff)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        pass
