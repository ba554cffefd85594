"""ConnectWise sync against the simulator: full mapping, idempotent re-sync, edits, errors, faults."""
from collections import Counter
from decimal import Decimal

from payloop.simulators.psa_book import invoice_lines
from payloop.testing.plugin import running_service

ALL_LINE_KINDS = {"recurring", "per_device", "per_user", "tiered", "time", "product", "proration",
                  "adjustment", "credit"}


def minor(value) -> int:
    return int(Decimal(str(value)) * 100)


async def sync(client, headers, connection_id, **body):
    response = await client.post(f"/v1/psa/connections/{connection_id}/sync", json=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_full_sync_matches_the_simulator_and_a_resync_publishes_nothing(infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw)
        run = await sync(client, headers, connection_id)
        assert run["status"] == "succeeded", run
        events = await psa.outbox_events(client)
        by_type = Counter(e["type"] for e in events)
        sim_invoices = [i for i in cw.state.invoices.values() if i["type"] != "Credit"]
        void = [i for i in sim_invoices if i["status"]["name"] == "Void"]
        assert by_type == {"client.upserted": 40, "agreement.upserted": 40, "invoice.created": len(sim_invoices),
                           "credit_memo.created": 1, "ticket.flagged": 1}

        agreement_lines = {line["id"]: e["data"]["agreement_id"] for e in events if e["type"] == "agreement.upserted"
                           for line in e["data"]["lines"]}
        created = {e["data"]["psa"]["external_id"]: e for e in events if e["type"] == "invoice.created"}
        kinds = set()
        for sim_invoice in sim_invoices:
            event = created[str(sim_invoice["id"])]
            data = event["data"]
            assert data["total_minor"] == minor(sim_invoice["total"])
            assert data["subtotal_minor"] == minor(sim_invoice["subtotal"])
            assert data["number"] == sim_invoice["invoiceNumber"]
            assert len(data["lines"]) == len(invoice_lines(cw.state, sim_invoice["id"]))
            assert sum(line["amount_minor"] for line in data["lines"]) == data["subtotal_minor"]
            assert event["client_id"] and event["tenant_id"] == psa.TENANT
            kinds |= {line["kind"] for line in data["lines"]}
            if sim_invoice["agreement"]:
                assert data["agreement"]["kind"] == "managed_services"
                linked = [line for line in data["lines"] if line["agreement_line_id"]]
                assert linked, "agreement invoices link their lines to the agreement's additions"
                assert {agreement_lines[line["agreement_line_id"]] for line in linked} == {data["agreement"]["id"]}
            else:
                assert data["agreement"] is None
            if sim_invoice in void:
                expected_status = "void"
            elif minor(sim_invoice["balance"]) == 0:
                expected_status = "paid"
            else:  # the invoice the credit memo applies to is partly settled by it
                expected_status = "partially_paid" if sim_invoice["credits"] else "open"
            assert data["status"] == expected_status
        assert kinds == ALL_LINE_KINDS - {"credit"}  # credits arrive as a credit memo and as negative lines
        memo = next(e["data"] for e in events if e["type"] == "credit_memo.created")
        assert memo["total_minor"] == 15000 and memo["applied_to"][0]["amount_minor"] == 15000
        ticket = next(e["data"] for e in events if e["type"] == "ticket.flagged")
        assert len(ticket["invoice_ids"]) == 1 and ticket["open"] is True
        client_event = next(e["data"] for e in events if e["type"] == "client.upserted")
        assert client_event["billing_emails"] and client_event["terms"] == "Net 30" and client_event["timezone"]

        again = await sync(client, headers, connection_id)
        assert again["status"] == "succeeded" and len(await psa.outbox_events(client)) == len(events)
        full = await sync(client, headers, connection_id, full=True)
        assert full["counts"]["unchanged"] > 500
        assert len(await psa.outbox_events(client)) == len(events), "unchanged data publishes nothing"

        history = (await client.get(f"/v1/psa/connections/{connection_id}/sync-runs", headers=headers)).json()
        assert [r["status"] for r in history["items"]] == ["succeeded"] * 3


async def test_edits_voids_and_new_invoices_arrive_on_the_next_poll(infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw)
        await sync(client, headers, connection_id)
        before = len(await psa.outbox_events(client))
        open_ids = [i["id"] for i in cw.state.invoices.values() if i["balance"] and i["type"] == "Agreement"]
        edited, voided = open_ids[-1], open_ids[-2]
        cw.add_invoice_line(edited, "ADJ-ONSITE", "1", "80.00", "After-hours callout")
        cw.void_invoice(voided)
        company = next(iter(cw.state.companies))
        added = cw.new_invoice(company, [("HW-SWITCH-24", "1", "899.00", "24-port switch")])

        run = await sync(client, headers, connection_id)
        assert run["status"] == "succeeded"
        new = (await psa.outbox_events(client))[before:]
        assert Counter(e["type"] for e in new) == {"invoice.updated": 1, "invoice.voided": 1, "invoice.created": 1}
        updated = next(e["data"] for e in new if e["type"] == "invoice.updated")
        assert updated["psa"]["external_id"] == str(edited)
        assert updated["changes"]["total_minor"]["to"] - updated["changes"]["total_minor"]["from"] == 8000
        assert "lines" in updated["changes"]
        assert next(e["data"] for e in new if e["type"] == "invoice.voided")["psa"]["external_id"] == str(voided)
        assert next(e["data"] for e in new if e["type"] == "invoice.created")["total_minor"] == minor(added["total"])
        # The incremental run filtered on lastUpdated.
        invoice_queries = [r["query"] for r in cw.requests if r["path"].endswith("/finance/invoices")]
        assert "lastUpdated>=[" in invoice_queries[-1]["conditions"]


async def test_rate_limits_and_server_errors_are_retried(infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw)
        cw.fail_next(429, path_contains="/company/companies", retry_after=1)
        cw.fail_next(500, path_contains="/finance/invoices")
        cw.fail_next(503, path_contains="/procurement/products")
        run = await sync(client, headers, connection_id)
        assert run["status"] == "succeeded", run
        assert not cw.faults, "every injected fault was met"
        assert Counter(e["type"] for e in await psa.outbox_events(client))["client.upserted"] == 40
        company_calls = [r for r in cw.requests if r["path"].endswith("/company/companies")]
        assert company_calls[0]["query"] == company_calls[1]["query"], "the refused page was asked for again"
        # Every request carried the vendor's auth: Basic company+public:private and the clientId header.
        assert all(r["headers"]["authorization"].startswith("Basic ") and r["headers"]["clientid"]
                   for r in cw.requests)


async def test_refused_credentials_stop_the_sync_with_a_clear_error(infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw, private_key="wrong-private-key")
        checked = (await client.post(f"/v1/psa/connections/{connection_id}/test", headers=headers)).json()
        assert checked["ok"] is False and "401" in checked["detail"]
        run = await sync(client, headers, connection_id)
        assert run["status"] == "failed" and "credentials refused" in run["error"]
        failed = await psa.outbox_events(client, "psa.sync_failed")
        assert len(failed) == 1 and failed[0]["data"]["retryable"] is False
        assert failed[0]["data"]["connection_id"] == connection_id
        assert len([r for r in cw.requests if r["path"].endswith("/company/companies")]) == 1, "401 is not retried"
        connection = (await client.get(f"/v1/psa/connections/{connection_id}", headers=headers)).json()
        assert connection["status"] == "error" and "credentials refused" in connection["last_error"]
        assert "wrong-private-key" not in str(connection) and connection["credentials"]["private_key"] == "****-key"


async def test_a_malformed_record_is_skipped_and_recorded_while_the_page_lands(infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    broken = next(i for i in cw.state.invoices.values() if i["type"] == "Agreement")
    broken["date"] = None
    broken["company"] = {"id": "not-a-number"}
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw)
        run = await sync(client, headers, connection_id)
        assert run["status"] == "succeeded"
        assert [e["external_id"] for e in run["errors"]] == [str(broken["id"])]
        assert "cannot map connectwise invoices record" in run["errors"][0]["error"]
        created = await psa.outbox_events(client, "invoice.created")
        sim_invoices = [i for i in cw.state.invoices.values() if i["type"] != "Credit"]
        assert len(created) == len(sim_invoices) - 1


async def test_paid_invoices_carry_the_day_of_their_latest_payment_when_the_connection_asks(infra, token, cw, psa):
    """ConnectWise invoices hold no paid date: with `paid_dates` the sync reads each paid invoice's payments."""
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw, paid_dates=True)
        assert (await sync(client, headers, connection_id))["status"] == "succeeded"
        created = {e["data"]["psa"]["external_id"]: e["data"] for e in await psa.outbox_events(client, "invoice.created")}
        paid = [i for i in cw.state.invoices.values() if str(i["id"]) in created and created[str(i["id"])]["status"] == "paid"]
        assert paid
        for invoice in paid:
            latest = max(p["paymentDate"][:10] for p in cw.payments_of(invoice["id"]))
            assert created[str(invoice["id"])]["paid_on"] == latest
        assert all(data["paid_on"] is None for data in created.values() if data["status"] != "paid")
        payment_reads = [r for r in cw.requests if r["method"] == "GET" and r["path"].endswith("/payments")]
        assert len(payment_reads) == len(paid), "one read per paid invoice, none for the others"


async def test_without_paid_dates_no_payment_is_read(infra, token, cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw)
        assert (await sync(client, headers, connection_id))["status"] == "succeeded"
        assert not [e for e in await psa.outbox_events(client, "invoice.created") if e["data"]["paid_on"]]
        assert not [r for r in cw.requests if r["path"].endswith("/payments")]
