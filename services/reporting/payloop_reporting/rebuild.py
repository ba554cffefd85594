"""`python -m payloop_reporting rebuild`: empty the read models and replay every topic into them.

Run it with the service's consumers stopped (`PAYLOOP_RUN_CONSUMERS=false`, or the service down):
the replay reads every partition from its beginning without a consumer group, applies each event
with the same handlers and the same inbox claims (group `reporting`) as the live consumer, and ends
when every partition's high watermark is reached. The live consumer then resumes from its committed
offsets, and the inbox skips whatever the replay already applied.

Only what the topics still hold can be replayed: on Kafka that is the topics' retention; on the
embedded broker, what was published since it started.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field

import structlog
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop.consumer import Handler
from payloop.db import make_engine, make_session_factory
from payloop.events.catalogue import CATALOGUE, UnknownEventType
from payloop.events.envelope import Envelope
from payloop.kafka import ensure_topics, make_consumer
from payloop.settings import PlatformSettings, platform_settings, service_database_url

from payloop_reporting.read_models import READ_MODEL_TABLES

log = structlog.get_logger(__name__)

_CLAIM = text("INSERT INTO inbox (consumer_group, event_id, event_type) VALUES (:group, :event_id, :type) "
              "ON CONFLICT DO NOTHING RETURNING 1")


@dataclass
class Progress:
    """Counts, and a one-line bar on a terminal (a line per 10% elsewhere)."""

    out: object = sys.stderr
    applied: int = 0
    skipped: int = 0
    failed: int = 0
    seen: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    _last_decile: int = -1

    def show(self, final: bool = False) -> None:
        total = max(self.total, self.seen)
        share = self.seen / total if total else 1.0
        rate = self.seen / max(time.monotonic() - self.started, 1e-6)
        bar = "#" * int(share * 30)
        line = (f"[{bar:<30}] {self.seen}/{total} events  applied {self.applied}  skipped {self.skipped}  "
                f"failed {self.failed}  {rate:,.0f}/s")
        if getattr(self.out, "isatty", lambda: False)():
            print("\r" + line, end="\n" if final else "", file=self.out, flush=True)
        elif final or int(share * 10) > self._last_decile:
            self._last_decile = int(share * 10)
            print(line, file=self.out, flush=True)


async def reset(session_factory: async_sessionmaker[AsyncSession], group: str) -> None:
    """Empty every read model and the group's inbox in one transaction."""
    async with session_factory() as session, session.begin():
        await session.execute(text(f"TRUNCATE {', '.join(READ_MODEL_TABLES)}, tenant_profiles"))
        await session.execute(text("DELETE FROM inbox WHERE consumer_group = :g"), {"g": group})


async def _apply(session: AsyncSession, record, handlers: dict[str, Handler], group: str, progress: Progress) -> None:
    try:
        envelope = Envelope.from_bytes(record.value)
        handler = handlers[envelope.type]
        data = CATALOGUE.parse(envelope.type, envelope.version, envelope.data)
    except (ValidationError, ValueError, KeyError, UnknownEventType) as exc:
        # The live consumer dead-lettered these already; a rebuild only reports them.
        progress.failed += 1
        log.warning("reporting.rebuild.unreadable", topic=record.topic, offset=record.offset, error=repr(exc))
        return
    try:
        async with session.begin_nested():
            if not await session.scalar(_CLAIM, {"group": group, "event_id": envelope.id, "type": envelope.type}):
                progress.skipped += 1
                return
            await handler(session, envelope, data)
        progress.applied += 1
    except Exception as exc:
        progress.failed += 1
        log.warning("reporting.rebuild.handler_failed", event_id=str(envelope.id), event_type=envelope.type,
                    error=repr(exc))


async def replay(session_factory: async_sessionmaker[AsyncSession], handlers: dict[str, Handler], group: str, *,
                 settings: PlatformSettings | None = None, progress: Progress | None = None) -> Progress:
    """Apply every event of the handlers' topics, from the beginning up to each partition's high watermark."""
    settings = settings or platform_settings()
    progress = progress or Progress()
    topics = sorted(handlers)
    await ensure_topics(topics, settings)
    # No group: the consumer takes every partition of the topics, from the beginning, and commits nothing.
    consumer = make_consumer(*topics, group_id=None, settings=settings, max_poll_records=2000)
    await consumer.start()
    try:
        idle_polls = 0
        while True:
            batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for tp, records in batches.items():
                async with session_factory() as session, session.begin():
                    for record in records:
                        await _apply(session, record, handlers, group, progress)
                progress.seen += len(records)
            # High watermarks, not end_offsets: Tansu answers ListOffsets-latest wrongly (BROKER.md).
            highs = {tp: consumer.highwater(tp) for tp in consumer.assignment()}
            progress.total = sum(h for h in highs.values() if h)
            progress.show()
            positions = {tp: await consumer.position(tp) for tp in highs}
            caught_up = bool(highs) and all(h is None or positions[tp] >= h for tp, h in highs.items())
            idle_polls = idle_polls + 1 if not batches else 0
            if caught_up and idle_polls >= 2:
                break
    finally:
        await consumer.stop()
    progress.show(final=True)
    return progress


async def rebuild(database_url: str, handlers: dict[str, Handler], group: str, *,
                  progress: Progress | None = None) -> Progress:
    engine = make_engine(database_url)
    try:
        factory = make_session_factory(engine)
        await reset(factory, group)
        return await replay(factory, handlers, group, progress=progress)
    finally:
        await engine.dispose()


def cli(argv: list[str]) -> None:
    from payloop_reporting.service import SERVICE

    parser = argparse.ArgumentParser(prog="python -m payloop_reporting rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("--yes", action="store_true", help="do not ask before emptying the read models")
    args = parser.parse_args(argv)
    url = service_database_url(SERVICE.name)
    if not args.yes and input("Empty the reporting read models and replay every topic? [y/N] ").lower() != "y":
        raise SystemExit(1)
    result = asyncio.run(rebuild(url, SERVICE.handlers, SERVICE.group))
    print(f"rebuilt: {result.applied} applied, {result.skipped} already applied, {result.failed} unreadable or failing",
          file=sys.stderr)
