"""Dead letters of any consumer group show as exceptions in their event's tenant, saying how to replay."""
import asyncio
import uuid

from payloop.testing.plugin import running_service
from payloop_reporting.service import SERVICE


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
