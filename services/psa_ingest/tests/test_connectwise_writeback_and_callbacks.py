"""Payment write-back to ConnectWise exactly once, and callbacks verified the vendor's way."""
import asyncio
import json
import uuid
from decimal import Decimal

import uvicorn
from sqlalchemy import text

from payloop.embedded import free_port
from payloop.simulators.connectwise import sign_callback
from payloop.testing.plugin import running_service
from payloop_psa_ingest.writeback import process_due_writebacks



async def open_invoices(client, psa, headers, connection_id, cw, count):
    response = await client.post(f"/v1/psa/connections/{connection_id}/sync", json={}, headers=headers)
    assert response.json()["status"] == "succeeded"
    created = [e["data"] for e in await psa.outbox_events(client, "invoice.created") if e["data"]["status"] == "open"]
    return created[:count]


async def test_payment_settled_twice_and_a_timed_out_call_record_exactly_one_payment(infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw, timeout_s=0.5)
        first, second = await open_invoices(client, psa, headers, connection_id, cw, 2)
        factory = client.app.state.session_factory

        # Delivered twice: one write-back queued, one payment in the PSA.
        for _ in range(2):
            await psa.settle(client, psa.TENANT, first["invoice_id"], first["balance_minor"], "pay_1")
        assert await process_due_writebacks(factory) == 1
        sim_first = int(first["psa"]["external_id"])
        assert len(cw.payments_of(sim_first)) == 1
        assert cw.state.invoices[sim_first]["status"]["name"] == "Paid" and cw.state.invoices[sim_first]["balance"] == 0
        recorded = await psa.outbox_events(client, "psa.payment_recorded")
        assert [(r["data"]["invoice_id"], r["data"]["amount_minor"]) for r in recorded] == \
            [(first["invoice_id"], first["balance_minor"])]
        assert recorded[0]["data"]["psa"]["external_id"] == str(cw.payments_of(sim_first)[0]["id"])

        # The PSA applies the payment but answers after our timeout: the retry finds it, posts nothing.
        cw.fail_next(200, path_contains="/payments", method="POST", delay_s=2, apply_first=True)
        await psa.settle(client, psa.TENANT, second["invoice_id"], second["balance_minor"], "pay_2")
        await process_due_writebacks(factory)
        writebacks = (await client.get("/v1/psa/payment-writebacks?status=failed", headers=headers)).json()["items"]
        assert len(writebacks) == 1 and "timed out" in writebacks[0]["last_error"]
        assert len(await psa.outbox_events(client, "psa.sync_failed")) == 1
        retried = await client.post(f"/v1/psa/payment-writebacks/{writebacks[0]['id']}/retry", headers=headers)
        assert retried.status_code == 200
        assert await process_due_writebacks(factory) == 1
        sim_second = int(second["psa"]["external_id"])
        assert len(cw.payments_of(sim_second)) == 1
        assert cw.state.invoices[sim_second]["status"]["name"] == "Paid"
        assert len(await psa.outbox_events(client, "psa.payment_recorded")) == 2
        all_rows = (await client.get("/v1/psa/payment-writebacks", headers=headers)).json()["items"]
        assert {r["status"] for r in all_rows} == {"recorded"}

        # Another tenant's payment for this invoice id is not ours to write back.
        await psa.settle(client, "someone-else", first["invoice_id"], 100, "pay_3")
        assert await process_due_writebacks(factory) == 0


def minor(amount) -> int:
    return int(Decimal(str(amount)) * 100)


async def test_a_returned_payment_is_reversed_in_the_psa_once_and_its_representment_recorded_again(
        infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw)
        [invoice] = await open_invoices(client, psa, headers, connection_id, cw, 1)
        factory, amount, sim_id = client.app.state.session_factory, invoice["balance_minor"], \
            int(invoice["psa"]["external_id"])
        await psa.settle(client, psa.TENANT, invoice["invoice_id"], amount, "pay_ach")
        assert await process_due_writebacks(factory) == 1
        assert cw.state.invoices[sim_id]["status"]["name"] == "Paid"

        # An open card dispute leaves the PSA alone: the MSP may still win it.
        await psa.dispute(client, psa.TENANT, invoice["invoice_id"], amount, "pay_ach", dispute_id="dp_1",
                          status="needs_response")
        assert await process_due_writebacks(factory) == 0

        # The bank returns the debit (told twice): one reversing payment, the invoice owed again.
        for _ in range(2):
            await psa.dispute(client, psa.TENANT, invoice["invoice_id"], amount, "pay_ach",
                              dispute_id="return:py_1", status="returned")
        assert await process_due_writebacks(factory) == 1
        assert [minor(p["amount"]) for p in cw.payments_of(sim_id)][-2:] == [amount, -amount]
        assert minor(cw.state.invoices[sim_id]["balance"]) == amount
        assert cw.state.invoices[sim_id]["status"]["name"] != "Paid"

        # Re-presented, the same payment settles again (attempt 2): a payment of its own in the PSA.
        await psa.settle(client, psa.TENANT, invoice["invoice_id"], amount, "pay_ach", attempt=2)
        assert await process_due_writebacks(factory) == 1
        assert [minor(p["amount"]) for p in cw.payments_of(sim_id)][-3:] == [amount, -amount, amount]
        assert cw.state.invoices[sim_id]["status"]["name"] == "Paid"


async def serve(app):
    """The service app on a real port (its lifespan already runs under running_service)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, task


async def wait_for(predicate, timeout=15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await predicate()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
    return result


async def test_a_verified_callback_brings_the_change_in_and_a_forged_one_changes_nothing(infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw)

        async def first_sync_done():
            runs = (await client.get(f"/v1/psa/connections/{connection_id}/sync-runs", headers=headers)).json()
            return [r for r in runs["items"] if r["status"] == "succeeded"]
        await wait_for(first_sync_done, timeout=60)  # the poller syncs a new connection at once
        created = await psa.outbox_events(client, "invoice.created")
        url, server, task = await serve(client.app)
        try:
            registered = await client.post(f"/v1/psa/connections/{connection_id}/webhooks",
                                           json={"public_url": url}, headers=headers)
            assert registered.status_code == 200 and len(registered.json()["webhook_ids"]) == 4
            baseline = len(await psa.outbox_events(client))

            # Forged: a body signed with a key the PSA never issued, and one whose key_url points elsewhere.
            callback = next(iter(cw.state.callbacks.values()))
            forged_body = json.dumps({"MessageId": "forged-1", "Type": "invoice", "ID": 1, "Action": "updated",
                                      "Metadata": {"key_url": f"{cw.api_url}/system/callbackEntry/key/"
                                                              f"{callback['_signingKeyId']}"}}).encode()
            for body, signature in ((forged_body, sign_callback("guessed-key", forged_body)),
                                    (forged_body.replace(cw.api_url.encode(), b"https://evil.example"),
                                     sign_callback("guessed-key", forged_body)),
                                    (forged_body, None)):
                sent = {"content-type": "application/json", **({"x-content-signature": signature} if signature else {})}
                response = await client.post(f"/webhooks/psa/{connection_id}", content=body, headers=sent)
                assert response.status_code == 401
            response = await client.post(f"/webhooks/psa/{uuid.uuid4()}", content=forged_body,
                                         headers={"x-content-signature": "x"})
            assert response.status_code == 401
            async with client.app.state.session_factory() as session:
                receipts = (await session.execute(text("SELECT count(*) FROM psa_webhook_receipts"))).scalar()
            assert receipts == 0 and len(await psa.outbox_events(client)) == baseline

            # Genuine: the simulator signs and delivers; the receiver wakes the poller long before its interval.
            target = int(next(e for e in created if e["data"]["status"] == "open")["data"]["psa"]["external_id"])
            cw.add_invoice_line(target, "ADJ-ONSITE", "1", "80.00", "After-hours callout")
            await cw.settle_deliveries()

            async def updated():
                return [e for e in await psa.outbox_events(client, "invoice.updated")
                        if e["data"]["psa"]["external_id"] == str(target)]
            event = (await wait_for(updated))[0]
            assert event["data"]["changes"]["total_minor"]["to"] - event["data"]["changes"]["total_minor"]["from"] == 8000
            runs = (await client.get(f"/v1/psa/connections/{connection_id}/sync-runs", headers=headers)).json()
            assert {r["trigger"] for r in runs["items"]} == {"poll"}
        finally:
            server.should_exit = True
            await task
