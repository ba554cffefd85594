"""The consumer runtime: at-least-once delivery made exactly-once in effect.

For each fetched batch, one database transaction applies the records, each partition's in order: the
batch's event ids are claimed in the `inbox` table in one statement (so a redelivered event has no
second effect), then the handlers run. A service may also give a batch handler for a busy event
type: consecutive records with the same batch handler are applied by one call, with set-based SQL,
which must have the same effect as the single handler applied to each record in order. If anything
in the batch fails, the transaction is rolled back and the records are applied one by one, each in
a savepoint with its single handler. The offsets are committed only after the database commit, at
most every `consumer_commit_interval_ms`. A failing handler is retried with exponential backoff;
after `consumer_max_attempts` the record goes to `{topic}.dlq.{group}` with the error, and the batch
moves on, so other keys keep flowing. Infrastructure failures (database or broker down) never dead-letter:
the batch's partitions are rewound to its first offsets and retried after a pause.
Stopping finishes the batch in hand, commits, then leaves the group.
"""
from __future__ import annotations

import asyncio
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop.events.catalogue import CATALOGUE, EventData, UnknownEventType
from payloop.events.envelope import Envelope
from payloop.events.topics import dlq_topic
from payloop.kafka import ensure_topics, make_consumer
from payloop.metrics import (
    CONSUMER_LAG, DEAD_LETTERS, EVENTS_APPLIED, EVENTS_DUPLICATE, HANDLER_ERRORS, HANDLER_LATENCY,
)
from payloop.settings import PlatformSettings

log = structlog.get_logger(__name__)

Handler = Callable[[AsyncSession, Envelope, EventData], Awaitable[None]]
BatchHandler = Callable[[AsyncSession, list[tuple[Envelope, EventData]]], Awaitable[None]]


def newest_per_key(run: list[tuple[Envelope, EventData]], key: Callable[[Envelope, EventData], object],
                   ) -> list[tuple[Envelope, EventData]]:
    """The event a "newest snapshot wins" upsert keeps for each key when applied to `run` in order:
    the latest `occurred_at`, the later one of equals. One row per key also keeps a multi-row
    `INSERT ... ON CONFLICT DO UPDATE` valid (PostgreSQL refuses to update a row twice in one)."""
    kept: dict[object, tuple[Envelope, EventData]] = {}
    for envelope, data in run:
        k = key(envelope, data)
        if k not in kept or kept[k][0].occurred_at <= envelope.occurred_at:
            kept[k] = (envelope, data)
    return list(kept.values())

_CLAIM = text(
    "INSERT INTO inbox (consumer_group, event_id, event_type) VALUES (:group, :event_id, :type) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)

_CLAIM_MANY = text(
    "INSERT INTO inbox (consumer_group, event_id, event_type) "
    "SELECT :group, id, type FROM unnest(CAST(:ids AS uuid[]), CAST(:types AS text[])) AS t(id, type) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)


class PoisonEvent(Exception):
    """An event no retry can apply (unparseable, unknown type, invalid data): dead-letter at once."""


_INFRA_ERRORS = (OperationalError, InterfaceError, asyncpg.InterfaceError, ConnectionError, OSError)


def _is_infrastructure_error(exc: BaseException) -> bool:
    if isinstance(exc, _INFRA_ERRORS):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


class ConsumerRuntime:
    def __init__(
        self,
        group: str,
        handlers: dict[str, Handler],
        session_factory: async_sessionmaker[AsyncSession],
        producer: AIOKafkaProducer,
        settings: PlatformSettings,
        *,
        topics: list[str] | None = None,
        batch_handlers: dict[str, BatchHandler] | None = None,
    ):
        self.group = group
        self.handlers = handlers
        self.batch_handlers = batch_handlers or {}
        self.topics = topics or sorted(handlers)
        self.session_factory = session_factory
        self.producer = producer
        self.settings = settings
        self._dlq_ready: set[str] = set()
        self.running = False

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop`; a crash of the loop (broker gone, dead-letter send failed) restarts it.

        Whatever was not committed is redelivered after the restart and de-duplicated by the inbox.
        """
        if not self.topics:
            return
        backoff = 1.0
        while not stop.is_set():
            try:
                await self._consume(stop)
                return
            except Exception as exc:
                log.error("consumer.crashed", group=self.group, error=repr(exc), restart_in_s=backoff)
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(backoff * 2, 30)

    async def _consume(self, stop: asyncio.Event) -> None:
        await ensure_topics(self.topics, self.settings)
        consumer = make_consumer(*self.topics, group_id=self.group, settings=self.settings)
        await consumer.start()
        self.running = True
        log.info("consumer.started", group=self.group, topics=self.topics)
        # Offsets are committed at most every `consumer_commit_interval_ms` (and at the stop), not after
        # each batch: the inbox already makes a redelivered event a no-op, so committing less often only
        # means a little more redelivery after a crash, for one broker request instead of one a batch.
        pending: dict[TopicPartition, int] = {}
        commit_due = 0.0
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=500, max_records=self.settings.consumer_max_records)
                if not batches:
                    continue
                try:
                    # Each partition's records stay in order; partitions need no order between them.
                    await self._apply_batch([record for records in batches.values() for record in records])
                except Exception as exc:
                    if not _is_infrastructure_error(exc):
                        raise
                    log.warning("consumer.batch.infrastructure_error", group=self.group, error=repr(exc))
                    for tp, records in batches.items():
                        consumer.seek(tp, records[0].offset)
                    await asyncio.sleep(1.0)
                    continue
                offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
                pending.update(offsets)
                self._record_lag(consumer, offsets)
                if time.monotonic() >= commit_due:
                    await self._commit(consumer, pending)
                    pending = {}
                    commit_due = time.monotonic() + self.settings.consumer_commit_interval_ms / 1000
        finally:
            self.running = False
            await self._commit(consumer, pending)
            await consumer.stop()
            log.info("consumer.stopped", group=self.group)

    async def _commit(self, consumer, offsets: dict[TopicPartition, int]) -> None:
        if not offsets:
            return
        try:
            # Bounded: aiokafka retries an unknown topic forever (BROKER.md).
            await asyncio.wait_for(consumer.commit(offsets), 15)
        except (CommitFailedError, KafkaError, asyncio.TimeoutError) as exc:
            # The effects are committed in the database; a redelivery will be skipped by the inbox.
            log.warning("consumer.commit_failed", group=self.group, error=repr(exc))

    def _record_lag(self, consumer, offsets: dict[TopicPartition, int]) -> None:
        # Lag from highwater(), not end_offsets(): Tansu answers ListOffsets-latest wrongly (BROKER.md).
        for tp, position in offsets.items():
            high = consumer.highwater(tp)
            if high is not None:
                CONSUMER_LAG.labels(self.group, tp.topic, tp.partition).set(max(high - position, 0))

    async def _apply_batch(self, records: list[ConsumerRecord]) -> None:
        """Fast path first: claim the whole batch in one statement and run the handlers without
        savepoints. If any handler fails, roll that back and redo the batch record by record, each in
        a savepoint with retries, so one bad event cannot take its neighbours down with it."""
        decoded: list[tuple[ConsumerRecord, Envelope, EventData, Handler]] = []
        poison: list[tuple[ConsumerRecord, PoisonEvent]] = []
        for record in records:
            try:
                decoded.append((record, *self._decode(record)))
            except PoisonEvent as exc:
                poison.append((record, exc))
        try:
            async with self.session_factory() as session, session.begin():
                claimed = await self._claim_all(session, [e for _, e, _, _ in decoded])
                fresh: list[tuple[Envelope, EventData, Handler]] = []
                for _, envelope, data, handler in decoded:
                    if envelope.id in claimed:
                        fresh.append((envelope, data, handler))
                        claimed.discard(envelope.id)  # a duplicate within the batch runs once
                    else:
                        EVENTS_DUPLICATE.labels(self.group).inc()
                await self._run_in_order(session, fresh)
        except Exception as exc:
            if _is_infrastructure_error(exc):
                raise
            log.info("consumer.batch.slow_path", group=self.group, error=repr(exc))
            async with self.session_factory() as session, session.begin():
                for record, envelope, data, handler in decoded:
                    await self._apply_record(session, record, envelope, data, handler)
        for record, exc in poison:
            await self._dead_letter(record, exc, attempts=1)

    async def _claim_all(self, session: AsyncSession, envelopes: list[Envelope]) -> set:
        if not envelopes:
            return set()
        rows = await session.execute(_CLAIM_MANY, {
            "group": self.group, "ids": [e.id for e in envelopes], "types": [e.type for e in envelopes],
        })
        return {row[0] for row in rows}

    async def _run_in_order(self, session: AsyncSession, fresh: list[tuple[Envelope, EventData, Handler]]) -> None:
        """Runs of consecutive events with the same batch handler go to it in one call, the rest one by one."""
        start = 0
        while start < len(fresh):
            batch = self.batch_handlers.get(fresh[start][0].type)
            end = start + 1
            if batch is not None:
                while end < len(fresh) and self.batch_handlers.get(fresh[end][0].type) is batch:
                    end += 1
                await self._run_batch_handler(session, batch, fresh[start:end])
            else:
                await self._run_handler(session, *fresh[start])
            start = end

    async def _run_batch_handler(self, session: AsyncSession, batch: BatchHandler,
                                 run: list[tuple[Envelope, EventData, Handler]]) -> None:
        started = time.perf_counter()
        await batch(session, [(envelope, data) for envelope, data, _ in run])
        share = (time.perf_counter() - started) / len(run)
        for envelope, _, _ in run:
            HANDLER_LATENCY.labels(self.group, envelope.type).observe(share)
            EVENTS_APPLIED.labels(self.group, envelope.type).inc()

    async def _run_handler(self, session: AsyncSession, envelope: Envelope, data: EventData,
                           handler: Handler) -> None:
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(
            tenant_id=envelope.tenant_id, event_id=str(envelope.id),
            event_type=envelope.type, correlation_id=envelope.correlation_id,
        ):
            await handler(session, envelope, data)
        HANDLER_LATENCY.labels(self.group, envelope.type).observe(time.perf_counter() - started)
        EVENTS_APPLIED.labels(self.group, envelope.type).inc()

    async def _apply_record(self, session: AsyncSession, record: ConsumerRecord, envelope: Envelope,
                            data: EventData, handler: Handler) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with session.begin_nested():
                    claimed = await session.scalar(
                        _CLAIM, {"group": self.group, "event_id": envelope.id, "type": envelope.type}
                    )
                    if not claimed:
                        EVENTS_DUPLICATE.labels(self.group).inc()
                        return
                    await self._run_handler(session, envelope, data, handler)
                return
            except Exception as exc:
                if _is_infrastructure_error(exc):
                    raise
                HANDLER_ERRORS.labels(self.group, envelope.type).inc()
                if attempt >= self.settings.consumer_max_attempts:
                    await self._dead_letter(record, exc, attempts=attempt)
                    return
                delay = min(
                    self.settings.consumer_backoff_max_ms,
                    self.settings.consumer_backoff_initial_ms * 2 ** (attempt - 1),
                ) / 1000 * random.uniform(0.8, 1.2)
                log.warning("consumer.handler_failed", group=self.group, event_id=str(envelope.id),
                            event_type=envelope.type, attempt=attempt, error=repr(exc),
                            retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)

    def _decode(self, record: ConsumerRecord) -> tuple[Envelope, EventData, Handler]:
        try:
            envelope = Envelope.from_bytes(record.value)
        except (ValidationError, ValueError) as exc:
            raise PoisonEvent(f"not a valid envelope: {exc}") from exc
        handler = self.handlers.get(envelope.type) or self.handlers.get(record.topic)
        if handler is None:
            raise PoisonEvent(f"no handler for event type {envelope.type!r} in group {self.group}")
        try:
            data = CATALOGUE.parse(envelope.type, envelope.version, envelope.data)
        except UnknownEventType as exc:
            raise PoisonEvent(f"unknown event type/version: {exc}") from exc
        except ValidationError as exc:
            raise PoisonEvent(f"data does not match {envelope.type} v{envelope.version}: {exc}") from exc
        return envelope, data, handler

    async def _dead_letter(self, record: ConsumerRecord, exc: BaseException, *, attempts: int) -> None:
        topic = dlq_topic(record.topic, self.group)
        if topic not in self._dlq_ready:
            await ensure_topics([topic], self.settings)
            self._dlq_ready.add(topic)
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        headers = list(record.headers or []) + [
            ("dlq-original-topic", record.topic.encode()),
            ("dlq-original-partition", str(record.partition).encode()),
            ("dlq-original-offset", str(record.offset).encode()),
            ("dlq-consumer-group", self.group.encode()),
            ("dlq-attempts", str(attempts).encode()),
            ("dlq-error", error[:4000].encode()),
            ("dlq-failed-at", datetime.now(UTC).isoformat().encode()),
        ]
        await self.producer.send_and_wait(topic, value=record.value, key=record.key, headers=headers)
        DEAD_LETTERS.labels(self.group, record.topic).inc()
        log.error("consumer.dead_lettered", group=self.group, topic=record.topic, dlq=topic,
                  partition=record.partition, offset=record.offset, attempts=attempts, error=error)
