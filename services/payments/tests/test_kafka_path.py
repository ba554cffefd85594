"""Once through the real broker: the running service consumes tenant, client, invoice and credit
memo events from their topics, and the inbox absorbs a redelivered invoice.created."""
import asyncio
from datetime import date

from payloop.events import new_event
from payloop.testing.plugin import running_service

from payloop_payments.service import SERVICE


async def test_events_from_the_broker_reach_the_service(infra, stripe_env, token, kit):
    tenant = "t-kafka"
    events = [
        new_event("tenant.updated", tenant_id=tenant, producer="tenants", data={
            "tenant_id": tenant, "name": "Kafka MSP", "timezone": "UTC", "currency": "USD"}),
        new_event("client.upserted", tenant_id=tenant, client_id="acme", producer="psa_ingest", data={
            "client_id": "acme", "psa": {"source": "connectwise", "external_id": "acme"}, "name": "Acme",
            "billing_emails": []}),
    ]
    invoice = new_event("invoice.created", tenant_id=tenant, client_id="acme", producer="psa_ingest",
                        data=kit.invoice_data("k-1", 10_000, due=date(2026, 8, 1)))
    memo = new_event("credit_memo.created", tenant_id=tenant, client_id="acme", producer="psa_ingest", data={
        "credit_memo_id": "cm-1", "psa": {"source": "connectwise", "external_id": "cm-1"}, "number": "CM-1",
        "currency": "USD", "issued_on": "2026-07-15", "total_minor": 2_500, "applied_to": [{"invoice_id": "k-1", "amount_minor": 2_500}]})
    events += [invoice, invoice, memo]  # the invoice is delivered twice
    async with running_service(infra, SERVICE, consumers=True, relay=False) as client:
        producer = client.app.state.producer
        for event in events:
            await producer.send_and_wait(event.type, event.to_bytes(), key=event.key.encode(), headers=event.headers())
        headers = token(tenant, "ar:read")
        group = client.app.state.consumer.group

        async def state():
            listed = await client.get("/v1/clients/acme/invoices", headers=headers)
            invoices = [(i["invoice_id"], i["open_minor"]) for i in listed.json()] if listed.status_code == 200 else []
            duplicates = [line for line in (await client.get("/metrics")).text.splitlines()
                          if line.startswith(f'payloop_events_duplicate_total{{group="{group}"}}')]
            return invoices, float(duplicates[0].split()[-1]) if duplicates else 0.0

        # The group reads the shared topics from the start, so other tests' redeliveries may add to
        # the duplicate count: at least ours must be there, and the balance shows no second effect.
        def done(observed) -> bool:
            return observed[0] == [("k-1", 7_500)] and observed[1] >= 1

        for _ in range(600):  # the consumer group joins first; give it up to a minute on a busy machine
            if done(await state()):
                break
            await asyncio.sleep(0.1)
        assert done(await state()), await state()
