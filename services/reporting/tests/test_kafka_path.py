"""Once through the real broker: the running service consumes every topic it subscribes to and
the inbox absorbs a redelivered event, with a payment arriving before its invoice."""
import asyncio

from payloop.testing.plugin import running_service
from payloop_reporting.service import SERVICE


async def test_events_from_the_broker_reach_the_read_models(infra, token, tenant, blank_book):
    b = blank_book(tenant)
    settled = b.payment("payment.settled", "PK1", "K", [("IK1", 4_000)], b.at("2026-01-10"))
    created = b.invoice("IK1", "K", 10_000, "2026-01-01", "2026-01-31")
    events = [b.events[0], settled, created, created]  # the invoice is delivered twice
    async with running_service(infra, SERVICE, consumers=True, relay=False) as client:
        producer = client.app.state.producer
        for event in events:
            await producer.send_and_wait(event.type, event.to_bytes(), key=event.key.encode(), headers=event.headers())
        headers = token(tenant, "ar:read")
        group = client.app.state.consumer.group

        async def state():
            page = (await client.get("/v1/aging/invoices", headers=headers)).json()
            metrics = (await client.get("/metrics")).text
            duplicates = [line for line in metrics.splitlines()
                          if line.startswith(f'payloop_events_duplicate_total{{group="{group}"}}')]
            return ([(i["invoice_id"], i["balance_minor"], i["status"]) for i in page["items"]],
                    float(duplicates[0].split()[-1]) if duplicates else 0.0)

        # The group reads shared topics from the start, so other tests' redeliveries may add to the
        # duplicate count: at least our one must be there.
        def done(observed) -> bool:
            return observed[0] == [("IK1", 6_000, "partially_paid")] and observed[1] >= 1

        for _ in range(600):  # the consumer group joins first; give it up to a minute on a busy machine
            if done(await state()):
                break
            await asyncio.sleep(0.1)
        assert done(await state()), await state()
