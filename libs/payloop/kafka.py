"""Kafka clients configured for Payloop's guarantees, on Apache Kafka and on the embedded Tansu.

Producers use acks=all and no idempotence (Tansu cannot InitProducerId; consumers are idempotent
instead). New consumer groups start at `earliest` (Tansu's ListOffsets-latest is wrong). Topics are
created explicitly with our partition count, because auto-created topics get the broker default.
"""
from __future__ import annotations

import asyncio

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from payloop.events.topics import domain_topics
from payloop.settings import PlatformSettings, platform_settings

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def make_producer(settings: PlatformSettings | None = None, **overrides) -> AIOKafkaProducer:
    settings = settings or platform_settings()
    options = dict(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=False,
        # The relay, which sends nearly everything (the rest: dead letters), hands over its whole
        # selection before it waits: lingering would only delay it, and batches of a relay's size (not
        # 16 KiB) spare the broker and each consumer a batch's overhead per few records. A larger
        # record still goes, in a batch of its own.
        linger_ms=0,
        max_batch_size=1024 * 1024,
        max_request_size=MAX_MESSAGE_BYTES,
        request_timeout_ms=10_000,
        compression_type=None,
    )
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(*topics: str, group_id: str | None, settings: PlatformSettings | None = None,
                  **overrides) -> AIOKafkaConsumer:
    settings = settings or platform_settings()
    options = dict(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        max_poll_records=settings.consumer_max_records,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=settings.consumer_heartbeat_interval_ms,
        fetch_max_bytes=MAX_MESSAGE_BYTES * 2,
        max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
    )
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(topics: list[str] | None = None, settings: PlatformSettings | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    settings = settings or platform_settings()
    wanted = list(topics if topics is not None else domain_topics())
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                await admin.create_topics([
                    NewTopic(t, num_partitions=settings.topic_partitions,
                             replication_factor=settings.topic_replication_factor)
                    for t in missing
                ])
            except TopicAlreadyExistsError:
                pass  # another process won the race; the topic is there, which is all we need
            log.info("kafka.topics.created", topics=missing)
        return missing
    finally:
        await admin.close()


async def list_topics(settings: PlatformSettings | None = None) -> list[str]:
    settings = settings or platform_settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


async def broker_reachable(settings: PlatformSettings | None = None, timeout_s: float = 2.0) -> bool:
    """A cheap metadata round trip, for /readyz."""
    settings = settings or platform_settings()
    host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True
