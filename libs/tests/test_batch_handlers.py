"""Batch handlers in the consumer runtime: runs of consecutive events go to one call, in order, and a
failing batch falls back to the single handlers, one event at a time."""
import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from payloop.consumer import ConsumerRuntime, newest_per_key
from payloop.db import make_engine, make_session_factory
from payloop.events import new_event
from payloop.kafka import ensure_topics, make_producer
from payloop.settings import platform_settings
from payloop_payments.service import SERVICE as PAYMENTS


def renamed(tenant: str, name: str):
    return new_event("tenant.updated", tenant_id=tenant, producer="tenants",
                     data={"tenant_id": tenant, "name": name, "timezone": "UTC", "currency": "USD"})


def sync_failed(tenant: str, error: str):
    return new_event("psa.sync_failed", tenant_id=tenant, producer="psa_ingest",
                     data={"connection_id": "c1", "source": "connectwise", "error": error, "retryable": True})


async def consume(events, handlers, batch_handlers, db_url, *, calls: "Calls", expected: int):
    """Publish `events` to one partition of a fresh topic and run a runtime until `expected` calls."""
    settings = platform_settings()
    topic = f"test.batch.{uuid.uuid4().hex[:8]}"
    await ensure_topics([topic], settings)
    producer = make_producer(settings)
    await producer.start()
    engine = make_engine(await db_url(PAYMENTS))
    stop = asyncio.Event()
    try:
        for event in events:  # one key: one partition, so the runtime sees them in this order
            await producer.send(topic, event.to_bytes(), key=b"one", partition=0)
        await producer.flush()
        runtime = ConsumerRuntime(f"g-{uuid.uuid4().hex[:6]}", handlers, make_session_factory(engine), producer,
                                  settings, topics=[topic], batch_handlers=batch_handlers)
        task = asyncio.create_task(runtime.run(stop))
        deadline = asyncio.get_running_loop().time() + 60
        while calls.count < expected:
            assert asyncio.get_running_loop().time() < deadline, "events not applied in time"
            await asyncio.sleep(0.1)
        stop.set()
        await task
        async with engine.connect() as conn:
            claimed = (await conn.execute(text("SELECT count(*) FROM inbox WHERE consumer_group = :g"),
                                          {"g": runtime.group})).scalar()
        return claimed
    finally:
        stop.set()
        await producer.stop()
        await engine.dispose()


class Calls(list):
    @property
    def count(self):
        return sum(len(names) for _, names in self)


def recording(calls: Calls, *, fail_on: str | None = None):
    async def single(session, envelope, data):
        name = getattr(data, "name", None) or data.error
        if name == fail_on:
            raise RuntimeError("this one cannot be applied")
        calls.append(("single", [name]))

    async def batch(session, run):
        names = [getattr(data, "name", None) or data.error for _, data in run]
        if fail_on in names:
            raise RuntimeError("a batch holding the bad one fails as a whole")
        calls.append(("batch", names))
    return single, batch


async def test_consecutive_events_of_a_batch_handler_are_applied_in_one_call_in_order(infra, db_url):
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    calls = Calls()
    single, batch = recording(calls)
    events = [renamed(tenant, "a"), renamed(tenant, "b"), sync_failed(tenant, "x"),
              renamed(tenant, "c"), renamed(tenant, "d"), renamed(tenant, "e")]
    handlers = {"tenant.updated": single, "psa.sync_failed": single}
    claimed = await consume(events, handlers, {"tenant.updated": batch}, db_url, calls=calls, expected=6)

    # Fetches may split the stream, but never reorder it or mix the types of a run.
    flat = [name for _, names in calls for name in names]
    assert flat == ["a", "b", "x", "c", "d", "e"]
    assert ("single", ["x"]) in calls
    assert all(kind == "batch" for kind, names in calls if names != ["x"])
    assert any(kind == "batch" and len(names) > 1 for kind, names in calls)
    assert claimed == 6


async def test_a_failing_batch_is_redone_event_by_event_and_only_the_bad_event_is_dead_lettered(infra, db_url,
                                                                                                   monkeypatch):
    monkeypatch.setenv("PAYLOOP_CONSUMER_MAX_ATTEMPTS", "1")
    platform_settings.cache_clear()
    try:
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        calls = Calls()
        single, batch = recording(calls, fail_on="bad")
        events = [renamed(tenant, n) for n in ("a", "bad", "c")]
        claimed = await consume(events, {"tenant.updated": single}, {"tenant.updated": batch}, db_url,
                                calls=calls, expected=2)
    finally:
        platform_settings.cache_clear()
    assert [name for _, names in calls for name in names] == ["a", "c"]
    assert claimed == 2  # the bad event's claim was rolled back with its savepoint


def test_newest_per_key_keeps_what_one_by_one_newest_wins_upserts_would_keep():
    now = datetime(2026, 11, 24, tzinfo=UTC)
    first, older, newer, same_time = (renamed("t", n) for n in ("first", "older", "newer", "same-time"))
    first = first.model_copy(update={"occurred_at": now})
    older = older.model_copy(update={"occurred_at": now - timedelta(seconds=5)})
    newer = newer.model_copy(update={"occurred_at": now + timedelta(seconds=5)})
    same_time = same_time.model_copy(update={"occurred_at": now + timedelta(seconds=5)})
    other = renamed("u", "other")
    run = [(e, e.data) for e in (first, older, other, newer, same_time)]
    kept = newest_per_key(run, lambda envelope, data: envelope.tenant_id)
    assert [e.data["name"] for e, _ in kept] == ["same-time", "other"]
