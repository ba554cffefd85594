"""`python -m payloop_reporting rebuild` replays the topics into empty read models and ends with the
same read model, and the same numbers, as applying the events live."""
import asyncio
import sys

from sqlalchemy import text

from payloop.db import make_engine, make_session_factory
from payloop.testing.plugin import running_service
from payloop_reporting import reports
from payloop_reporting.reports import ClientFilter
from payloop_reporting.service import SERVICE


async def numbers(session_factory, tenant, as_of):
    async with session_factory() as session:
        metrics = await reports.metrics(session, tenant, as_of=as_of, window_days=90, currency=None, client_id=None)
        aging = await reports.aging_report(session, tenant, as_of=as_of, currency=None, filters=ClientFilter(),
                                           sort="total", descending=True, cursor=None, limit=None)
    return metrics, aging


async def test_rebuild_from_the_topics_gives_the_same_numbers(infra, book, tenant, as_of, apply_events,
                                                             dump_read_models):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as live:
        await apply_events(live.app.state.session_factory, book.events)
        expected = await numbers(live.app.state.session_factory, tenant, as_of)
        expected_rows = await dump_read_models(live.app.state.session_factory, tenant)
        producer = live.app.state.producer
        for event in book.events:
            await producer.send_and_wait(event.type, event.to_bytes(), key=event.key.encode(), headers=event.headers())

    url = await infra.fresh_database("reporting", SERVICE.migrations_dir)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        async with factory() as session, session.begin():  # something stale the rebuild must throw away
            await session.execute(text("INSERT INTO clients (tenant_id, client_id, name) VALUES (:t, 'stale', 'x')"),
                                  {"t": tenant})
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "payloop_reporting", "rebuild", "--yes",
            env={**infra.env(), "PAYLOOP_REPORTING_DATABASE_URL": url, "PAYLOOP_LOG_LEVEL": "ERROR"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, stderr = await asyncio.wait_for(process.communicate(), 120)
        assert process.returncode == 0, stderr.decode()
        assert "[##############################]" in stderr.decode() and "rebuilt:" in stderr.decode()

        assert await numbers(factory, tenant, as_of) == expected
        assert await dump_read_models(factory, tenant) == expected_rows  # the stale client is gone too
    finally:
        await engine.dispose()
