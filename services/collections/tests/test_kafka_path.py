"""Once through the real broker: events in through the consumer runtime, reminder.sent out through
the outbox relay. (Other tests call the handlers directly to stay fast.)"""
import asyncio
import json
from datetime import datetime
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer
from sqlalchemy import text

from payloop.events import new_event
from payloop.events.envelope import Envelope
from payloop.settings import platform_settings

NY = ZoneInfo("America/New_York")


async def wait_for(predicate, what: str, timeout: float = 60.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := await predicate()):
        assert loop.time() < deadline, f"not met in time: {what}"
        await asyncio.sleep(0.1)
    return result


async def test_events_from_kafka_lead_to_one_email_and_a_published_reminder(make_harness, sink):
    async with make_harness(datetime(2026, 3, 5, 10, tzinfo=NY), scheduler=True, consumers=True,
                            relay=True) as h:
        producer = h.client.app.state.producer
        events = [
            new_event("tenant.updated", tenant_id=h.tenant, producer="tenants", data={
                "tenant_id": h.tenant, "name": "Kafka MSP", "timezone": "America/New_York", "currency": "USD"}),
            new_event("client.upserted", tenant_id=h.tenant, client_id="k1", producer="psa_ingest", data={
                "client_id": "k1", "psa": {"source": "superops", "external_id": "k1"}, "name": "K One",
                "billing_emails": ["ap@k1.example"]}),
            new_event("invoice.created", tenant_id=h.tenant, client_id="k1", producer="psa_ingest", data={
                "invoice_id": "kinv", "psa": {"source": "superops", "external_id": "kinv"}, "number": "K-1",
                "agreement": None, "currency": "USD", "issued_on": "2026-02-03", "due_on": "2026-03-05",
                "terms": None, "status": "open", "subtotal_minor": 7_700, "tax_minor": 0, "total_minor": 7_700,
                "balance_minor": 7_700, "lines": []}),
        ]
        # Produce once the runtime has created its topics and joined, so nothing is auto-created.
        await wait_for(lambda: asyncio.sleep(0, result=h.client.app.state.consumer.running), "consumer running")
        for event in [*events, events[-1]]:  # the invoice is delivered twice
            await producer.send_and_wait(event.type, event.to_bytes(), key=event.key.encode(),
                                         headers=event.headers())

        # The group reads the shared topics from the start, so other tests' clients may be mailed too.
        def ours():
            return [m for m in sink.messages if "ap@k1.example" in m.rcpt_tos]
        await wait_for(lambda: asyncio.sleep(0, result=bool(ours())), "an email")
        assert "77.00 USD" in ours()[0].body("plain")

        async def published() -> bool:
            async with h.factory() as session:
                return bool((await session.execute(text(
                    "SELECT sent_at IS NOT NULL FROM outbox WHERE topic = 'reminder.sent'"))).scalar())
        await wait_for(published, "reminder.sent relayed")

        # No group: every partition, from the beginning, without a group join.
        consumer = AIOKafkaConsumer("reminder.sent", bootstrap_servers=platform_settings().kafka_bootstrap,
                                    group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            found = []

            async def reminder_seen() -> bool:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        envelope = Envelope.from_bytes(record.value)
                        if envelope.tenant_id == h.tenant:
                            found.append(envelope)
                return bool(found)
            await wait_for(reminder_seen, "reminder.sent on its topic")
        finally:
            await consumer.stop()
        assert found[0].data["invoice_ids"] == ["kinv"] and found[0].data["to"] == ["ap@k1.example"]
        assert found[0].data["step"] == 0 and found[0].data["level"] == "friendly"
        await asyncio.sleep(0.3)  # a few more scheduler ticks: still one email
        assert len(ours()) == 1, json.dumps([m.parsed["Subject"] for m in ours()])

