"""The event backbone in one process: outbox -> relay -> broker -> consumer runtime -> inbox."""
import asyncio
import uuid

import asyncpg
import pytest
from sqlalchemy import text

from payloop.consumer import ConsumerRuntime
from payloop.db import asyncpg_dsn, make_engine, make_session_factory
from payloop.events import new_event
from payloop.kafka import make_producer
from payloop.outbox import OutboxRelay, publish
from payloop.settings import platform_settings
from payloop_payments.service import SERVICE as PAYMENTS
from payloop_tenants.service import SERVICE as TENANTS


def tenant_event(tenant: str, name: str):
    return new_event("tenant.updated", tenant_id=tenant, producer="tenants",
                     data={"tenant_id": tenant, "name": name, "timezone": "UTC", "currency": "USD"})


async def wait_for(predicate, timeout=30.0, interval=0.1):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def test_event_written_in_outbox_reaches_consumer_once(infra, db_url):
    settings = platform_settings()
    source_url, sink_url = await db_url(TENANTS), await db_url(PAYMENTS)
    source_engine, sink_engine = make_engine(source_url), make_engine(sink_url)
    producer = make_producer(settings)
    await producer.start()
    stop = asyncio.Event()
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    event = tenant_event(tenant, "First name")
    try:
        async with make_session_factory(source_engine)() as session, session.begin():
            await publish(session, event)
        relay = OutboxRelay("tenants", asyncpg_dsn(source_url), producer, settings)
        group = f"payments-{uuid.uuid4().hex[:6]}"
        runtime = ConsumerRuntime(group, dict(PAYMENTS.handlers), make_session_factory(sink_engine),
                                  producer, settings)
        tasks = [asyncio.create_task(relay.run(stop)), asyncio.create_task(runtime.run(stop))]

        async def profile_name():
            async with sink_engine.connect() as conn:
                return (await conn.execute(text("SELECT name FROM tenant_profiles WHERE tenant_id = :t"),
                                           {"t": tenant})).scalar()
        assert await wait_for(profile_name) == "First name"

        # The relay marked it sent only after the broker acknowledged.
        conn = await asyncpg.connect(asyncpg_dsn(source_url))
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
        await conn.close()

        # Redelivery of the same event (same id) has no second effect: publish it again by hand.
        await producer.send_and_wait("tenant.updated", event.to_bytes(), key=event.key.encode())
        newer = tenant_event(tenant, "Second name")
        async with make_session_factory(source_engine)() as session, session.begin():
            await publish(session, newer)

        async def renamed():
            return await profile_name() == "Second name"
        await wait_for(renamed)
        async with sink_engine.connect() as conn:
            claimed = (await conn.execute(
                text("SELECT count(*) FROM inbox WHERE consumer_group = :g AND event_id = :e"),
                {"g": group, "e": event.id})).scalar()
        assert claimed == 1
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await producer.stop()
        await source_engine.dispose()
        await sink_engine.dispose()
