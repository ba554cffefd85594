"""The consumer runtime's use of the broker's offsets and of its own database connections."""
import asyncio
import uuid

import asyncpg
from sqlalchemy import text

from payloop.consumer import ConsumerRuntime
from payloop.db import asyncpg_dsn, make_engine, make_session_factory
from payloop.events import new_event
from payloop.kafka import make_consumer, make_producer
from payloop.settings import platform_settings
from payloop.testing.plugin import running_service
from payloop_payments.service import SERVICE as PAYMENTS


def tenant_event(tenant: str, name: str):
    return new_event("tenant.updated", tenant_id=tenant, producer="tenants",
                     data={"tenant_id": tenant, "name": name, "timezone": "UTC", "currency": "USD"})


async def eventually(predicate, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def profile_named(factory, tenant: str, name: str):
    async def check() -> bool:
        async with factory() as session:
            found = await session.scalar(text("SELECT name FROM tenant_profiles WHERE tenant_id = :t"),
                                         {"t": tenant})
        return found == name
    return check


async def redelivered(settings, topic: str, group: str) -> int:
    """How many records a new member of `group` is given: those after the group's committed offsets."""
    member = make_consumer(topic, group_id=group, settings=settings)
    await member.start()
    try:
        records = 0
        deadline = asyncio.get_running_loop().time() + 30
        while not member.assignment():  # the group join (seconds on Tansu)
            assert asyncio.get_running_loop().time() < deadline, "never joined"
            records += sum(len(batch) for batch in (await member.getmany(timeout_ms=500)).values())
        for _ in range(4):
            records += sum(len(batch) for batch in (await member.getmany(timeout_ms=500)).values())
        return records
    finally:
        await member.stop()


async def test_a_clean_stop_commits_every_applied_batch_though_the_interval_has_not_passed(infra, db_url):
    settings = platform_settings().model_copy(update={"consumer_commit_interval_ms": 600_000})
    topic, group, tenant = f"commits-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:6]}", f"t-{uuid.uuid4().hex[:8]}"
    engine = make_engine(await db_url(PAYMENTS))
    factory = make_session_factory(engine)
    producer = make_producer(settings)
    await producer.start()
    stop = asyncio.Event()
    runtime = ConsumerRuntime(group, dict(PAYMENTS.handlers), factory, producer, settings, topics=[topic])
    task = asyncio.create_task(runtime.run(stop))
    try:
        for name in ("First", "Second", "Third"):  # three batches: only the first is committed at once
            event = tenant_event(tenant, name)
            await producer.send_and_wait(topic, event.to_bytes(), key=event.key.encode())
            await eventually(profile_named(factory, tenant, name))
        stop.set()
        await asyncio.wait_for(task, 30)
        assert await redelivered(settings, topic, group) == 0
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        await engine.dispose()


async def test_events_are_applied_after_the_database_dropped_every_connection_of_the_service(infra):
    producer = make_producer(platform_settings())
    await producer.start()
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    try:
        async with running_service(infra, PAYMENTS, relay=False) as client:
            factory = client.app.state.session_factory
            for name in ("Before", "After"):
                event = tenant_event(tenant, name)
                await producer.send_and_wait("tenant.updated", event.to_bytes(), key=event.key.encode())
                await eventually(profile_named(factory, tenant, name), timeout=60)
                # Every connection of the service's database goes, the consumer's unpinged ones too.
                url = asyncpg_dsn(str(client.app.state.engine.url.render_as_string(hide_password=False)))
                admin = await asyncpg.connect(url)
                dropped = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                await admin.close()
                assert dropped >= 1
            async with factory() as session:
                inbox = await session.scalar(text(
                    "SELECT count(*) FROM inbox WHERE event_id = :e"), {"e": event.id})
            assert inbox == 1
            assert client.app.state.consumer.running
    finally:
        await producer.stop()
