"""The behaviour every PSA connector shares, run against each vendor's simulator (ConnectWise has its own
module, written first): full mapping, idempotent re-sync, edits and voids, faults, webhooks, write-back."""
import uuid
from collections import Counter

from sqlalchemy import text

from payloop.testing.plugin import running_service
from payloop_psa_ingest.writeback import process_due_writebacks

RECURRING_KINDS = {"recurring", "per_device", "per_user", "tiered", "proration"}


async def connect(client, headers, body) -> str:
    response = await client.post("/v1/psa/connections", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def sync(client, headers, connection_id, **body) -> dict:
    response = await client.post(f"/v1/psa/connections/{connection_id}/sync", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_full_sync_matches_the_simulator_and_a_resync_publishes_nothing(infra, token, vendor, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await connect(client, headers, vendor.connection())
        run = await sync(client, headers, connection_id)
        assert run["status"] == "succeeded" and not run["errors"], run
        events = await psa.outbox_events(client)
        assert Counter(e["type"] for e in events) == vendor.counts()

        agreement_of_line = {line["id"]: e["data"]["agreement_id"] for e in events
                             if e["type"] == "agreement.upserted" for line in e["data"]["lines"]}
        assert {line_kind for e in events if e["type"] == "agreement.upserted"
                for line_kind in (line["kind"] for line in e["data"]["lines"])} >= {"recurring", "per_device",
                                                                                    "per_user", "tiered"}
        created = {e["data"]["psa"]["external_id"]: e for e in events if e["type"] == "invoice.created"}
        expected = vendor.invoices()
        assert created.keys() == expected.keys()
        kinds = set()
        for external_id, want in expected.items():
            event = created[external_id]
            data = event["data"]
            assert event["tenant_id"] == psa.TENANT and event["client_id"]
            assert data["psa"]["source"] == vendor.source
            assert (data["number"], data["total_minor"], data["subtotal_minor"], data["status"]) == \
                (want["number"], want["total_minor"], want["subtotal_minor"], want["status"]), external_id
            assert len(data["lines"]) == want["lines"]
            assert data.get("paid_on") == want["paid_on"], external_id  # the PSA's own paid date
            assert sum(line["amount_minor"] for line in data["lines"]) == data["subtotal_minor"]
            kinds |= {line["kind"] for line in data["lines"]}
            if want["agreement"]:
                linked = [line for line in data["lines"] if line["agreement_line_id"]]
                assert data["agreement"] and linked, external_id
                assert {agreement_of_line[line["agreement_line_id"]] for line in linked} == {data["agreement"]["id"]}
                assert {line["kind"] for line in linked} <= RECURRING_KINDS
            else:
                assert data["agreement"] is None
        assert kinds >= {"recurring", "per_device", "per_user", "tiered", "time", "product", "proration",
                         "adjustment"}
        ticket = next(e["data"] for e in events if e["type"] == "ticket.flagged")
        assert len(ticket["invoice_ids"]) == 1 and ticket["open"] is True
        client_event = next(e["data"] for e in events if e["type"] == "client.upserted")
        assert client_event["billing_emails"] and client_event["terms"]

        again = await sync(client, headers, connection_id)
        assert again["status"] == "succeeded" and len(await psa.outbox_events(client)) == len(events)
        full = await sync(client, headers, connection_id, full=True)
        assert full["counts"]["unchanged"] == sum(vendor.counts().values())
        assert len(await psa.outbox_events(client)) == len(events), "unchanged data publishes nothing"


async def test_edits_voids_and_new_invoices_arrive_on_the_next_poll(infra, token, vendor, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await connect(client, headers, vendor.connection())
        await sync(client, headers, connection_id)
        before = len(await psa.outbox_events(client))
        edited, voided = vendor.open_invoices()[-2:]
        vendor.edit(edited)
        vendor.void(voided)
        added = vendor.add()

        run = await sync(client, headers, connection_id)
        assert run["status"] == "succeeded" and not run["full"]
        new = (await psa.outbox_events(client))[before:]
        assert Counter(e["type"] for e in new) == {"invoice.updated": 1, "invoice.voided": 1, "invoice.created": 1}
        updated = next(e["data"] for e in new if e["type"] == "invoice.updated")
        assert updated["psa"]["external_id"] == edited and vendor.edit_changes in updated["changes"]
        assert next(e["data"] for e in new if e["type"] == "invoice.voided")["psa"]["external_id"] == voided
        created = next(e["data"] for e in new if e["type"] == "invoice.created")
        assert created["psa"]["external_id"] == added
        assert created["total_minor"] == vendor.invoices()[added]["total_minor"]


async def test_rate_limits_and_server_errors_are_retried(infra, token, vendor, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await connect(client, headers, vendor.connection())
        vendor.sim.fail_next(429, path_contains=vendor.client_listing, retry_after=1)
        vendor.sim.fail_next(500, path_contains=vendor.invoice_listing)
        run = await sync(client, headers, connection_id)
        assert run["status"] == "succeeded", run
        assert not vendor.sim.faults, "every injected fault was met"
        assert Counter(e["type"] for e in await psa.outbox_events(client)) == vendor.counts()
        listing = [r for r in vendor.sim.requests if vendor.client_listing in r["path"]]
        assert len(listing) >= 2 and (listing[0]["query"], listing[0]["body"]) == \
            (listing[1]["query"], listing[1]["body"]), "the refused page was asked for again"
        assert all(vendor.authenticated(r) for r in vendor.sim.requests)


async def test_refused_credentials_stop_the_sync_with_a_clear_error(infra, token, vendor, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await connect(client, headers, vendor.connection(wrong_secret=True))
        checked = (await client.post(f"/v1/psa/connections/{connection_id}/test", headers=headers)).json()
        assert checked["ok"] is False and "401" in checked["detail"]
        calls_before = len(vendor.sim.requests)
        run = await sync(client, headers, connection_id)
        assert run["status"] == "failed" and "credentials refused" in run["error"]
        assert len(vendor.sim.requests) == calls_before + 1, "a 401 is not retried"
        failed = await psa.outbox_events(client, "psa.sync_failed")
        assert len(failed) == 1 and failed[0]["data"]["retryable"] is False
        connection = (await client.get(f"/v1/psa/connections/{connection_id}", headers=headers)).json()
        assert connection["status"] == "error" and "wrong-secret" not in str(connection)


async def test_a_malformed_record_is_skipped_and_recorded_while_the_page_lands(infra, token, vendor, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    broken = vendor.break_invoice()
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await connect(client, headers, vendor.connection())
        run = await sync(client, headers, connection_id)
        assert run["status"] == "succeeded"
        assert [e["external_id"] for e in run["errors"]] == [broken]
        assert f"cannot map {vendor.source} invoices record" in run["errors"][0]["error"]
        created = await psa.outbox_events(client, "invoice.created")
        assert len(created) == vendor.counts()["invoice.created"] - 1



async def test_payment_settled_twice_and_a_timed_out_call_record_exactly_one_payment(infra, token, vendor, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await connect(client, headers, vendor.connection(timeout_s=0.5))
        await sync(client, headers, connection_id)
        created = {e["data"]["psa"]["external_id"]: e["data"] for e in await psa.outbox_events(client, "invoice.created")}
        first, second = (created[ext] for ext in vendor.open_invoices()[:2])
        factory = client.app.state.session_factory

        for _ in range(2):
            await psa.settle(client, psa.TENANT, first["invoice_id"], first["balance_minor"], "pay_1")
        assert await process_due_writebacks(factory) == 1
        assert vendor.payments_in_psa(first["psa"]["external_id"]) == 1 and vendor.paid_in_psa(first["psa"]["external_id"])

        # The PSA applies the payment but answers after our timeout: exactly one payment lands all the same.
        vendor.sim.fail_next(200, delay_s=2, apply_first=True, **vendor.writeback_fault)
        await psa.settle(client, psa.TENANT, second["invoice_id"], second["balance_minor"], "pay_2")
        await process_due_writebacks(factory)
        rows = (await client.get("/v1/psa/payment-writebacks", headers=headers)).json()["items"]
        for row in rows:
            if row["status"] != "recorded":
                await client.post(f"/v1/psa/payment-writebacks/{row['id']}/retry", headers=headers)
        await process_due_writebacks(factory)
        ext = second["psa"]["external_id"]
        assert vendor.payments_in_psa(ext) == 1 and vendor.paid_in_psa(ext)
        rows = (await client.get("/v1/psa/payment-writebacks", headers=headers)).json()["items"]
        assert {r["status"] for r in rows} == {"recorded"} and len(rows) == 2
        recorded = await psa.outbox_events(client, "psa.payment_recorded")
        assert sorted(r["data"]["invoice_id"] for r in recorded) == sorted([first["invoice_id"], second["invoice_id"]])
        vendor.check_requests_against_spec()

        # Re-syncing shows the invoices paid, as the PSA now does.
        await sync(client, headers, connection_id)
        statuses = {e["data"]["psa"]["external_id"]: e["data"]["status"]
                    for e in await psa.outbox_events(client, "invoice.updated")}
        assert statuses == {first["psa"]["external_id"]: "paid", ext: "paid"}


async def test_a_verified_webhook_brings_the_change_in_and_a_forged_one_changes_nothing(infra, token, vendor, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE, consumers=False, relay=False) as client:
        connection_id = await connect(client, headers, vendor.connection())

        async def first_sync_done():
            runs = (await client.get(f"/v1/psa/connections/{connection_id}/sync-runs", headers=headers)).json()
            return [r for r in runs["items"] if r["status"] == "succeeded"]
        await psa.wait_for(first_sync_done, timeout=60)  # the poller syncs a new connection at once
        url, server, task = await psa.serve(client.app)
        try:
            registered = await client.post(f"/v1/psa/connections/{connection_id}/webhooks",
                                           json={"public_url": url}, headers=headers)
            assert registered.status_code == 200, registered.text
            vendor.configure_webhook(f"{url}/webhooks/psa/{connection_id}")
            baseline = len(await psa.outbox_events(client))

            for body, sent in vendor.forged_webhooks():
                response = await client.post(f"/webhooks/psa/{connection_id}", content=body,
                                             headers={"content-type": "application/json", **sent})
                assert response.status_code == 401
            body, sent = vendor.forged_webhooks()[0]
            assert (await client.post(f"/webhooks/psa/{uuid.uuid4()}", content=body, headers=sent)).status_code == 401
            async with client.app.state.session_factory() as session:
                receipts = (await session.execute(text("SELECT count(*) FROM psa_webhook_receipts"))).scalar()
            assert receipts == 0 and len(await psa.outbox_events(client)) == baseline

            # Genuine: the simulator signs and delivers; the receiver wakes the poller long before its interval.
            event_type, external_id = vendor.change_with_webhook()
            await vendor.sim.settle_deliveries()

            async def arrived():
                return [e for e in (await psa.outbox_events(client))[baseline:]
                        if e["type"] == event_type and e["data"]["psa"]["external_id"] == external_id]
            await psa.wait_for(arrived)
            async with client.app.state.session_factory() as session:
                receipts = (await session.execute(text("SELECT count(*) FROM psa_webhook_receipts"))).scalar()
            assert receipts >= 1
        finally:
            server.should_exit = True
            await task
