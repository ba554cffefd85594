"""Read models built from the book's events: the API's figures equal the hand-computed ones, and
events arriving twice or in any order across topics give the same read model."""
import random

from sqlalchemy import text

from payloop_reporting.service import SERVICE
from payloop.testing.plugin import running_service


async def test_metrics_from_events_equal_the_hand_computed_figures(infra, token, book, tenant, as_of, apply_events):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, book.events)
        response = await client.get("/v1/metrics", params={"as_of": as_of.isoformat(), "window_days": 90},
                                    headers=token(tenant, "ar:read"))
        assert response.status_code == 200, response.text
        metrics = response.json()
    # The figures of test_metrics.py, rounded as the API rounds them (ratios 4 places, days 1).
    assert metrics["receivables_minor"] == 125_000
    assert metrics["aging"] == {"current": 30_000, "d1_30": 15_000, "d31_60": 30_000, "d61_90": 10_000,
                                "d90_plus": 40_000, "total": 125_000}
    assert metrics["credit_sales_minor"] == 122_000
    assert metrics["dso"] == 92.2 and metrics["best_possible_dso"] == 22.1 and metrics["countback_dso"] == 99.3
    assert metrics["overdue_rate"] == {"by_count": 0.8, "by_amount": 0.76}
    # I8's payment settled at 22:00 New York on Feb 25 (Feb 26 UTC): 5 days, not 6.
    assert metrics["average_days_to_pay"] == 22.5 and metrics["on_time_ratio"] == 0.5
    assert metrics["days_to_pay_drift"] == {"previous": 20.0, "current": 22.5, "change": 2.5}
    assert metrics["autopay_adoption"] == 0.3333
    assert metrics["cei"] == 33.1


async def test_duplicates_and_any_order_across_topics_give_the_same_read_model(infra, book, tenant, apply_events,
                                                                              dump_read_models):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as first:
        await apply_events(first.app.state.session_factory, book.events)
        in_order = await dump_read_models(first.app.state.session_factory, tenant)
    shuffled = list(reversed(book.events)) + random.Random(7).sample(book.events, len(book.events))
    async with running_service(infra, SERVICE, consumers=False, relay=False) as second:
        # Reversed (payments before invoices, refunds before settlements, the void before the invoice),
        # then everything again in a shuffled order: every event arrives twice.
        await apply_events(second.app.state.session_factory, shuffled)
        assert await dump_read_models(second.app.state.session_factory, tenant) == in_order
    assert len(in_order["invoices"]) == 9 and len(in_order["timeline"]) > 20


async def test_invoice_rows_carry_balance_status_and_collection_state(infra, token, book, tenant, as_of, apply_events):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, book.events)
        async with client.app.state.session_factory() as session:
            rows = {r["invoice_id"]: r for r in (await session.execute(text(
                "SELECT * FROM invoices WHERE tenant_id = :t"), {"t": tenant})).mappings()}
        detail = (await client.get("/v1/clients/A", params={"as_of": as_of.isoformat()},
                                   headers=token(tenant, "ar:read"))).json()
    assert rows["I0"]["status"] == "paid" and rows["I0"]["outside_paid_minor"] == 8_000
    # P2 is both in our reductions and in the PSA's balance: counted once.
    assert rows["I2"]["balance_minor"] == 30_000 and rows["I2"]["status"] == "partially_paid"
    assert str(rows["I2"]["promised_on"]) == "2026-04-10" and rows["I2"]["last_reminder_level"] == "firm"
    assert rows["I4"]["disputed"] is True and rows["I4"]["balance_minor"] == 15_000
    assert rows["I5"]["failed_attempts"] == 1 and rows["I5"]["next_retry_at"] is not None
    assert rows["I6"]["status"] == "open" and rows["I6"]["balance_minor"] == 10_000  # refunded
    assert rows["I7"]["status"] == "void" and rows["I7"]["balance_minor"] == 0

    assert detail["name"] == "Acme Dental" and detail["contract_kinds"] == ["managed_services"]
    assert detail["autopay_enrolled"] is True and detail["collection_state"] == "promised"
    assert detail["metrics"]["receivables_minor"] == 30_000
    assert [i["invoice_id"] for i in detail["invoices"]][0] == "I2"  # open first
    assert {p["payment_id"]: p["status"] for p in detail["payments"]} == {"P1": "disputed", "P2": "succeeded",
                                                                         "P8": "succeeded"}
    kinds = [e["kind"] for e in detail["timeline"]]
    assert "promise" in kinds and "reminder" in kinds and "payment_settled" in kinds
    assert len(detail["trend"]) == 13


async def test_exceptions_say_what_to_do_and_close_when_fixed(infra, token, book, tenant, as_of, apply_events):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, book.events)
        headers = token(tenant, "ar:read")
        open_ = (await client.get("/v1/exceptions", headers=headers)).json()["items"]
        everything = (await client.get("/v1/exceptions", params={"include_resolved": "true"}, headers=headers)).json()
        page = (await client.get("/v1/exceptions", params={"limit": 2}, headers=headers)).json()
        rest = (await client.get("/v1/exceptions", params={"limit": 50, "cursor": page["next_cursor"]},
                                 headers=headers)).json()
    by_id = {e["exception_id"]: e for e in open_}
    assert set(by_id) == {"payment_failed:P5", "payment_disputed:DP1", "unmatched_payout:PO1",
                          "gl_post_failed:E2", "psa_sync_failed:CONN1"}
    assert by_id["payment_failed:P5"]["next_attempt_at"].startswith("2026-03-23")
    assert by_id["unmatched_payout:PO1"]["detail"].endswith("PX")  # P8 is matched
    assert all(e["action"] for e in open_)
    resolved = {e["exception_id"] for e in everything["items"] if e["resolved_at"]}
    assert resolved == {"gl_post_failed:E1"}
    assert [e["exception_id"] for e in page["items"] + rest["items"]] == [e["exception_id"] for e in open_]


async def test_another_tenant_sees_none_of_it(infra, token, book, tenant, as_of, apply_events, make_book):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, book.events)
        await apply_events(client.app.state.session_factory, make_book("someone-else").events[:1])
        headers = token("someone-else", "ar:read")
        aging = (await client.get("/v1/aging", params={"as_of": as_of.isoformat()}, headers=headers)).json()
        assert aging["clients"] == [] and aging["totals"]["total"] == 0
        assert (await client.get("/v1/exceptions", headers=headers)).json()["items"] == []
        assert (await client.get("/v1/clients/A", headers=headers)).status_code == 404
        invoices = (await client.get("/v1/aging/invoices", headers=headers)).json()
        assert invoices["items"] == []


async def test_metric_series_by_month_follow_the_book(infra, token, book, tenant, apply_events):
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, book.events)
        series = (await client.get("/v1/metrics/series", params={"start": "2026-01-01", "end": "2026-03-31",
                                                                 "interval": "month"},
                                   headers=token(tenant, "ar:read"))).json()
    # Jan 31: I2 50,000 + I5 40,000 (I6 paid, not yet refunded); Feb 28: I2 30,000 + I4 15,000 + I5 + I6 10,000.
    assert [(p["as_of"], p["receivables_minor"]) for p in series["points"]] == [
        ("2026-01-31", 90_000), ("2026-02-28", 95_000), ("2026-03-31", 125_000)]
    assert series["points"][-1]["cei"] == 33.1


async def test_drift_alert_names_the_client_and_both_averages(infra, token, tenant, as_of, apply_events, blank_book):
    b = blank_book(tenant)
    b.add("client.upserted", b.at("2025-09-02"), {"client_id": "D", "name": "Delta Dental",
                                                "psa": {"source": "connectwise", "external_id": "D"}}, "D")
    # 18 days to pay in the quarter before, 34 in the last one.
    for invoice, issued, due, paid in (("D1", "2025-10-01", "2025-10-31", "2025-10-19"),
                                       ("D2", "2025-11-01", "2025-12-01", "2025-11-19"),
                                       ("D3", "2026-01-01", "2026-01-31", "2026-02-04"),
                                       ("D4", "2026-02-01", "2026-03-03", "2026-03-07")):
        b.invoice(invoice, "D", 10_000, issued, due)
        b.payment("payment.settled", f"P{invoice}", "D", [(invoice, 10_000)], b.at(paid))
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, b.events)
        report = (await client.get("/v1/drift", params={"as_of": as_of.isoformat()},
                                   headers=token(tenant, "ar:read"))).json()
        calmer = (await client.get("/v1/drift", params={"as_of": as_of.isoformat(), "threshold_days": 17},
                                   headers=token(tenant, "ar:read"))).json()
    assert [(a["client_id"], a["previous_days"], a["current_days"], a["change_days"]) for a in report["alerts"]] == [
        ("D", 18.0, 34.0, 16.0)]
    assert report["alerts"][0]["message"] == "Delta Dental: average days-to-pay from 18 to 34 over the last 90 days"
    assert calmer["alerts"] == []


async def test_history_paid_in_the_psa_drifts_by_the_psa_dates_not_the_sync(infra, token, tenant, as_of, apply_events,
                                                                            blank_book):
    """A client's history first seen already paid, in one sync on one day: each invoice's payment is dated by
    the PSA's `paid_on` (whether its first snapshot was paid or it was paid later), so the drift is the
    client's own; without PSA dates the same history would look paid on the day of the sync."""
    b = blank_book(tenant)
    b.add("client.upserted", b.at("2025-09-02"), {"client_id": "K", "name": "Keystone Logistics",
                                                "psa": {"source": "connectwise", "external_id": "K"}}, "K")
    synced = b.at("2026-03-30")
    for invoice, issued, due, paid in (("K1", "2025-10-01", "2025-10-31", "2025-10-19"),
                                       ("K2", "2025-11-01", "2025-12-01", "2025-11-19"),
                                       ("K3", "2026-01-01", "2026-01-31", "2026-02-04")):
        b.invoice(invoice, "K", 10_000, issued, due, status="paid", balance=0, occurred_at=synced, paid_on=paid)
    # K4: open at the first sync, then paid in the PSA (a cheque), which the next sync shows.
    b.invoice("K4", "K", 10_000, "2026-02-01", "2026-03-03", occurred_at=synced)
    b.invoice("K4", "K", 10_000, "2026-02-01", "2026-03-03", type_="invoice.updated", status="paid", balance=0,
              occurred_at=b.at("2026-03-31"), paid_on="2026-03-07")
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, b.events)
        report = (await client.get("/v1/drift", params={"as_of": as_of.isoformat()},
                                   headers=token(tenant, "ar:read"))).json()
        async with client.app.state.session_factory() as session:
            paid = dict((await session.execute(text(
                "SELECT invoice_id, paid_at FROM invoices WHERE tenant_id = :t"), {"t": tenant})).all())
    # 18 days to pay in the quarter before, 34 in the last one: the figures of the drift test above.
    assert [(a["client_id"], a["previous_days"], a["current_days"], a["change_days"]) for a in report["alerts"]] == [
        ("K", 18.0, 34.0, 16.0)]
    assert {k: v.date().isoformat() for k, v in paid.items()} == {
        "K1": "2025-10-19", "K2": "2025-11-19", "K3": "2026-02-04", "K4": "2026-03-07"}
