"""A step is sent once, whatever redelivers events or how many workers run the scheduler."""
import asyncio
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import text

from payloop.auth import mint_token
from payloop.db import make_engine, make_session_factory
from payloop.embedded import free_port, stop_process
from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE

from payloop_collections.clock import FixedClock
from payloop_collections.service import SERVICE, build_service

NY = ZoneInfo("America/New_York")


async def test_redelivered_events_change_nothing_twice(make_harness, sink):
    async with make_harness(datetime(2026, 3, 5, 10, tzinfo=NY)) as h:
        await h.tenant_profile()
        await h.add_client("c1")
        invoice = await h.add_invoice("c1", date(2026, 3, 5), 50_000)
        created = new_event("invoice.created", tenant_id=h.tenant, client_id="c1", producer="test",
                            data={**{k: v for k, v in h.invoices[invoice].items() if k != "client_id"}})
        payment = new_event("payment.settled", tenant_id=h.tenant, client_id="c1", producer="test", data={
            "payment_id": "pay-1", "method": {"type": "ach"}, "amount_minor": 20_000, "currency": "USD",
            "allocations": [{"invoice_id": invoice, "amount_minor": 20_000}], "processor": {}})
        for _ in range(3):  # as if the inbox had lost its record: handlers are idempotent on their own
            await h.apply("invoice.created", {}, event=created)
            await h.apply("payment.settled", {}, event=payment)
            await h.tick()
        assert len(sink.messages) == 1
        assert "300.00 USD of 500.00 USD" in sink.messages[0].body("plain")  # the partial payment counted once


async def test_two_worker_processes_send_each_step_once(infra, db_url, sink):
    """Two `serve` processes on one database, clocks racing through a week at high speed."""
    url = await db_url(SERVICE)
    engine = make_engine(url)
    tenant = "msp-two-workers"
    handlers = build_service(clock=FixedClock(datetime.now(UTC)), scheduler=False).handlers

    async def apply(type: str, data: dict, client_id: str | None = None):
        event = new_event(type, tenant_id=tenant, client_id=client_id, data=data, producer="test")
        async with make_session_factory(engine)() as session, session.begin():
            await handlers[type](session, event, CATALOGUE.parse(type, 1, event.data))

    await apply("tenant.updated", {"tenant_id": tenant, "name": "Two", "timezone": "America/New_York",
                                   "currency": "USD"})
    clients = [f"c{i}" for i in range(5)]
    for cid in clients:
        await apply("client.upserted", {"client_id": cid, "psa": {"source": "halopsa", "external_id": cid},
                                        "name": cid, "billing_emails": [f"ap@{cid}.example"]}, cid)
        await apply("invoice.created", {
            "invoice_id": f"inv-{cid}", "psa": {"source": "halopsa", "external_id": cid}, "number": cid,
            "agreement": None, "currency": "USD", "issued_on": "2026-02-03", "due_on": "2026-03-04", "terms": None,
            "status": "open", "subtotal_minor": 1000, "tax_minor": 0, "total_minor": 1000, "balance_minor": 1000,
            "lines": []}, cid)
    await engine.dispose()

    # A policy of three steps on consecutive days, sendable all day long: 2, 3 and 4 March, so a day
    # lasts about two real seconds even at the racing speed below. The workers start on a still
    # clock (Sunday 1 March), then both are set racing through those days.
    policy = {"name": "Daily", "is_default": True, "business_days": False, "send_hour": 0,
              "quiet_start_hour": 0, "quiet_end_hour": 0,
              "steps": [{"offset_days": -2, "level": "friendly"}, {"offset_days": -1, "level": "friendly"},
                        {"offset_days": 0, "level": "firm"}]}
    end = datetime(2026, 3, 4, 23, tzinfo=NY)
    env = {**infra.env(), "PAYLOOP_COLLECTIONS_DATABASE_URL": url, "PAYLOOP_RUN_CONSUMERS": "false",
           "PAYLOOP_RUN_RELAY": "false", "PAYLOOP_LOG_LEVEL": "WARNING",
           "PAYLOOP_COLLECTIONS_SMTP_PORT": str(sink.smtp_port),
           "PAYLOOP_COLLECTIONS_CLOCK_START": datetime(2026, 3, 1, tzinfo=NY).isoformat(),
           "PAYLOOP_COLLECTIONS_CLOCK_SPEED": "0.000001", "PAYLOOP_COLLECTIONS_TICK_SECONDS": "0.05"}
    ports = [free_port(), free_port()]
    logs = [open(infra.root / f"collections-worker-{i}.log", "w") for i in range(2)]
    workers = [subprocess.Popen([sys.executable, "-m", "payloop_collections", "serve", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT) for port, log in zip(ports, logs)]
    headers = {"Authorization": f"Bearer {mint_token(tenant, ['admin'])}"}
    try:
        async with httpx.AsyncClient() as http:
            async def clock_of(port: int) -> datetime | None:
                try:
                    response = await http.get(f"http://127.0.0.1:{port}/v1/collections/clock", headers=headers)
                except httpx.TransportError:
                    return None
                return datetime.fromisoformat(response.json()["now"]) if response.status_code == 200 else None

            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while None in [await clock_of(port) for port in ports]:
                assert all(w.poll() is None for w in workers), "a worker died; see its log in the test root"
                assert loop.time() < deadline, "workers did not start"
                await asyncio.sleep(0.1)
            stored = await http.put(f"http://127.0.0.1:{ports[0]}/v1/collections/policies/daily", json=policy,
                                    headers=headers)
            assert stored.status_code == 200, stored.text
            race = {"now": datetime(2026, 3, 1, 23, tzinfo=NY).isoformat(), "speed": 40_000}
            for port in ports:
                moved = await http.put(f"http://127.0.0.1:{port}/v1/collections/clock", json=race, headers=headers)
                assert moved.status_code == 200, moved.text
            while True:
                clocks = [await clock_of(port) for port in ports]
                if all(c is not None and c > end for c in clocks):
                    break
                assert all(w.poll() is None for w in workers), "a worker died; see its log in the test root"
                assert loop.time() < deadline, f"workers did not get to {end}: {clocks}"
                await asyncio.sleep(0.2)
    finally:
        for worker in workers:
            stop_process(worker)
        for log in logs:
            log.close()

    sent = Counter((m.parsed["X-Payloop-Client"], parsedate_to_datetime(m.parsed["Date"]).astimezone(NY).date())
                   for m in sink.messages)
    expected = {(cid, day) for cid in clients for day in (date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4))}
    assert set(sent) == expected
    assert all(count == 1 for count in sent.values()), sent

    engine = make_engine(url)
    async with engine.connect() as conn:
        steps = (await conn.execute(text(
            "SELECT invoice_id, step_key, outcome FROM reminder_steps ORDER BY 1, 2"))).all()
        announced = (await conn.execute(text("SELECT count(*) FROM outbox WHERE topic = 'reminder.sent'"))).scalar()
    await engine.dispose()
    assert [(s.step_key, s.outcome) for s in steps if s.invoice_id == "inv-c0"] == [
        ("step0", "send"), ("step1", "send"), ("step2", "send")]
    assert announced == 15
