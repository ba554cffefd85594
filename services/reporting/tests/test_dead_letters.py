"""Dead letters of any consumer group show as exceptions in their event's tenant, saying how to replay."""
import asyncio
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from payloop.testing.plugin import running_service
from payloop_reporting.service import SERVICE

PAYLOOP = str(Path(sys.executable).parent / "payloop")


async def test_a_dead_letter_becomes_an_exception_with_the_replay_command(infra, token, tenant, blank_book):
    event = blank_book(tenant).invoice("IX", "X", 1_000, "2026-01-01", "2026-01-31")
    group = f"collections-dlqtest-{uuid.uuid4().hex[:6]}"
    topic = f"invoice.created.dlq.{group}"
    headers = event.headers() + [("dlq-consumer-group", group.encode()), ("dlq-error", b"KeyError: 'policy'"),
                                 ("dlq-failed-at", b"2026-03-01T10:00:00+00:00"), ("dlq-attempts", b"5")]
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await client.app.state.producer.send_and_wait(topic, event.to_bytes(), key=event.key.encode(), headers=headers)
        for _ in range(600):  # the loop polls every few seconds
            items = (await client.get("/v1/exceptions", params={"kind": "dead_letter"},
                                      headers=token(tenant, "ar:read"))).json()["items"]
            if items:
                break
            await asyncio.sleep(0.1)
    assert [(i["exception_id"], i["client_id"], i["detail"]) for i in items] == [
        (f"dead_letter:{group}:{event.id}", "X", "KeyError: 'policy'")]
    assert f"payloop dlq replay {topic} --event-id {event.id}" in items[0]["action"]


async def test_a_replayed_dead_letter_is_resolved_and_reopens_if_it_fails_again(infra, token, tenant, blank_book):
    event = blank_book(tenant).invoice("IR", "R", 1_000, "2026-01-01", "2026-01-31")
    group = f"gl-dlqreplay-{uuid.uuid4().hex[:6]}"
    topic = f"invoice.created.dlq.{group}"

    def letter(failed_at: datetime) -> list[tuple[str, bytes]]:
        return event.headers() + [("dlq-consumer-group", group.encode()), ("dlq-error", b"boom"),
                                  ("dlq-failed-at", failed_at.isoformat().encode()), ("dlq-attempts", b"3")]

    async def listed(**params) -> list[dict]:
        return (await client.get("/v1/exceptions", params={"kind": "dead_letter", **params},
                                 headers=token(tenant, "ar:read"))).json()["items"]

    async def until(predicate) -> list[dict]:
        for _ in range(600):  # the loop polls every second
            items = await listed(include_resolved="true")
            if predicate(items):
                return items
            await asyncio.sleep(0.1)
        raise AssertionError(f"exceptions never matched: {items}")

    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        producer = client.app.state.producer
        await producer.send_and_wait(topic, event.to_bytes(), key=event.key.encode(),
                                     headers=letter(datetime.now(UTC) - timedelta(minutes=5)))
        await until(lambda items: len(items) == 1 and items[0]["resolved_at"] is None)

        # The operator's replay, through the real CLI, marks the letter replayed on its topic.
        proc = await asyncio.create_subprocess_exec(PAYLOOP, "dlq", "replay", topic, env=infra.env(),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await proc.communicate())[0].decode()
        assert proc.returncode == 0 and f"replayed {event.id}" in out, out
        await until(lambda items: len(items) == 1 and items[0]["resolved_at"] is not None)
        assert await listed() == []

        proc = await asyncio.create_subprocess_exec(PAYLOOP, "dlq", "show", topic, env=infra.env(),
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out = (await proc.communicate())[0].decode()
        assert "replayed at" in out and "1 dead letter(s)" in out and "0 pending" in out, out

        # The replayed event fails again: a new letter after the marker reopens the exception.
        await producer.send_and_wait(topic, event.to_bytes(), key=event.key.encode(),
                                     headers=letter(datetime.now(UTC) + timedelta(seconds=1)))
        items = await until(lambda items: len(items) == 1 and items[0]["resolved_at"] is None)
        assert items[0]["exception_id"] == f"dead_letter:{group}:{event.id}"
