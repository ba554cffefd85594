"""Dead letters as exceptions: a background loop reads every `{topic}.dlq.{group}` topic.

The consumer runtime of every service dead-letters what it cannot apply, with the error and the
original position in `dlq-*` headers (docs/architecture.md). This loop reads those topics without a
consumer group (from the beginning at each start: the exception rows are upserts by event id, so
rereading is harmless) and opens one exception per dead letter in the event's tenant, saying how to
replay it. `payloop dlq replay` appends a replay marker after the letter (payloop.dead_letters), which
resolves the exception; a letter that fails again after its replay reopens it.
"""
from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import structlog
from aiokafka import ConsumerRecord
from fastapi import FastAPI

from payloop.dead_letters import REPLAYED_AT, headers_of, is_replay_marker
from payloop.events.topics import DLQ_MARKER
from payloop.kafka import make_consumer

from payloop_reporting import read_models as rm

log = structlog.get_logger(__name__)

DLQ_PATTERN = f".*{re.escape(DLQ_MARKER)}.*"
METADATA_REFRESH_MS = 5000
RETRY_S = 5.0


def _exception_id(headers: dict[str, str]) -> str:
    return f"dead_letter:{headers.get('dlq-consumer-group', '?')}:{headers['event-id']}"


def _exception_args(record: ConsumerRecord, headers: dict[str, str]) -> dict:
    group = headers.get("dlq-consumer-group", "?")
    event_id = headers["event-id"]
    event_type = headers.get("event-type", "event")
    key = (record.key or b"").decode(errors="replace")
    client_id = key.split(":", 1)[1] if ":" in key else None
    failed_at = headers.get("dlq-failed-at")
    return {
        "kind": "dead_letter",
        "client_id": client_id, "subject_id": event_id,
        "title": f"{event_type} could not be applied by {group}",
        "detail": headers.get("dlq-error", "no error recorded")[:1000],
        "action": f"Fix the cause in {group}, then run `payloop dlq replay {record.topic} --event-id {event_id}` "
                  f"(`payloop dlq show {record.topic}` shows the event).",
        "action_href": None,
        "occurred_at": datetime.fromisoformat(failed_at) if failed_at else datetime.now(UTC),
    }


async def watch_dead_letters(app: FastAPI, stop: asyncio.Event) -> None:
    """Background loop (ServiceDefinition.background): keep the dead-letter exceptions current."""
    # No group: the consumer takes every partition of the matching topics itself; new dead-letter
    # topics join at the next metadata refresh.
    consumer = make_consumer(group_id=None, metadata_max_age_ms=METADATA_REFRESH_MS)
    consumer.subscribe(pattern=DLQ_PATTERN)
    started = False
    try:
        while not stop.is_set():
            try:
                if not started:
                    await consumer.start()
                    started = True
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                await _record(app, [record for records in batches.values() for record in records])
            except Exception as exc:  # the broker or the database may be away; try again shortly
                log.warning("reporting.dead_letters.poll_failed", error=repr(exc))
                try:
                    await asyncio.wait_for(stop.wait(), RETRY_S)
                except asyncio.TimeoutError:
                    pass
    finally:
        if started:
            await consumer.stop()


async def _record(app: FastAPI, records: list[ConsumerRecord]) -> None:
    placed = [(record, headers) for record in records
              if (headers := headers_of(record)).get("tenant-id") and headers.get("event-id")]
    if not placed:
        return  # nothing here is an envelope we can place in a tenant
    async with app.state.session_factory() as session, session.begin():
        for record, headers in placed:
            if is_replay_marker(headers):
                await rm.resolve_exception(session, headers["tenant-id"], _exception_id(headers),
                                           datetime.fromisoformat(headers[REPLAYED_AT]))
            else:
                await rm.open_exception(session, headers["tenant-id"], _exception_id(headers),
                                        **_exception_args(record, headers))
    log.info("reporting.dead_letters.seen", count=len(placed))
