"""The operator CLI against the session's real broker and PostgreSQL."""
import asyncio
import json
import sys
import uuid
from pathlib import Path

import asyncpg
import jwt
from aiokafka import TopicPartition

from payloop.events import new_event
from payloop.kafka import make_consumer, make_producer

PAYLOOP = str(Path(sys.executable).parent / "payloop")


async def run(infra, *args: str, env: dict | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(PAYLOOP, *args, env={**infra.env(), **(env or {})},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode()


async def test_token_mints_a_verifiable_jwt_and_refuses_unknown_scopes(infra):
    code, out = await run(infra, "token", "--tenant", "acme", "--scopes", "ar:read,payments:write")
    assert code == 0
    claims = jwt.decode(out.strip(), options={"verify_signature": False})
    assert claims["tenant_id"] == "acme" and claims["scopes"] == ["ar:read", "payments:write"]
    code, out = await run(infra, "token", "--tenant", "acme", "--scopes", "root")
    assert code == 2 and "unknown scope(s) root" in out


async def test_topics_tail_and_lag(infra):
    code, out = await run(infra, "topics", "--create")
    assert code == 0 and "invoice.created" in out.splitlines() and "payment.settled" in out.splitlines()

    tenant = f"cli-{uuid.uuid4().hex[:8]}"
    producer = make_producer()
    await producer.start()
    try:
        for n in range(3):
            event = new_event("tenant.updated", tenant_id=tenant, producer="tenants",
                              data={"tenant_id": tenant, "name": f"Name {n}", "timezone": "UTC", "currency": "USD"})
            await producer.send_and_wait("tenant.updated", event.to_bytes(), key=event.key.encode())
    finally:
        await producer.stop()

    code, out = await run(infra, "events", "tail", "tenant.updated", "-n", "2", "--tenant", tenant)
    assert code == 0, out
    names = [json.loads(line)["data"]["name"] for line in out.splitlines() if line.startswith("{")]
    assert names == ["Name 1", "Name 2"]

    # A group that committed at the first of this tenant's events lags by exactly what followed.
    group = f"cli-lag-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer("tenant.updated", group_id=group)
    await consumer.start()
    try:
        seen = []
        while len([r for r in seen if tenant.encode() in r.key]) < 3:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                seen.extend(records)
        mine = [r for r in seen if r.key.startswith(tenant.encode())]
        tp = TopicPartition("tenant.updated", mine[0].partition)
        await consumer.commit({tp: mine[0].offset + 1})
    finally:
        await consumer.stop()
    code, out = await run(infra, "consumers", "lag", "--group", group)
    assert code == 0, out
    row = next(line.split() for line in out.splitlines() if line.startswith(group))
    committed, high, lag = int(row[3]), int(row[4]), int(row[5])
    assert committed == mine[0].offset + 1 and lag == high - committed and lag >= 2


async def test_migrate_creates_and_upgrades_a_service_database(infra):
    name = f"cli_migrate_{uuid.uuid4().hex[:6]}"
    url = infra.url(name)
    code, out = await run(infra, "migrate", "tenants", "--create-database",
                          env={"PAYLOOP_TENANTS_DATABASE_URL": url})
    assert code == 0, out
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    finally:
        await conn.close()
    assert {"outbox", "inbox", "tenants", "alembic_version"} <= tables
    code, out = await run(infra, "migrate", "payments", env={"PAYLOOP_PAYMENTS_DATABASE_URL": ""})
    assert code == 2 and "PAYLOOP_PAYMENTS_DATABASE_URL is not set" in out


async def test_dlq_commands_explain_a_wrong_topic(infra):
    code, out = await run(infra, "dlq", "show", "no.such.topic.dlq.nobody")
    assert code == 2 and "no topic" in out
