"""Today's aging from the open-invoice indexes: the book moved so that its as-of date is today in
New York. Filters, sorts, cursor pagination and CSV export, and agreement with the metric functions."""
import csv
import io
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from payloop.testing.plugin import running_service
from payloop_reporting.service import SERVICE

BUCKETS = {"current": 30_000, "d1_30": 15_000, "d31_60": 30_000, "d61_90": 10_000, "d90_plus": 40_000,
           "total": 125_000}


TENANT = f"aging-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
async def client(infra, make_book, as_of, apply_events, shift_book):
    """One service for the module: every test here only reads."""
    today = datetime.now(ZoneInfo("America/New_York")).date()
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, shift_book(make_book(TENANT), (today - as_of).days).events)
        yield client


@pytest.fixture
def tenant() -> str:
    return TENANT


async def get(client, token, tenant, path, **params):
    response = await client.get(path, params=params, headers=token(tenant, "ar:read"))
    assert response.status_code == 200, response.text
    return response


async def test_client_aging_today_matches_the_book_and_the_metric_functions(client, token, tenant):
    report = (await get(client, token, tenant, "/v1/aging")).json()
    assert report["totals"] == BUCKETS
    rows = {c["client_id"]: c for c in report["clients"]}
    assert rows["A"]["buckets"] == {**dict.fromkeys(BUCKETS, 0), "d31_60": 30_000, "total": 30_000}
    assert rows["B"]["buckets"]["current"] == 30_000 and rows["B"]["buckets"]["d1_30"] == 15_000
    assert rows["C"]["oldest_days_past_due"] == 151 and rows["C"]["collection_state"] == "escalated"
    metrics = (await get(client, token, tenant, "/v1/metrics")).json()
    assert metrics["aging"] == report["totals"]  # the SQL roll-up and the pure functions agree


@pytest.mark.parametrize("params, expected", [
    ({"bucket": "d90_plus"}, ["C"]),
    ({"autopay": "true"}, ["C", "A"]),  # the live flag is the newest event's (C's enrolment, dated after D)
    ({"autopay": "false"}, ["B"]),
    ({"collection_state": "promised"}, ["A"]),
    ({"collection_state": "paused"}, ["B"]),
    ({"q": "bright"}, ["B"]),
    ({"sort": "name", "order": "asc"}, ["A", "B", "C"]),
    ({"sort": "total", "order": "desc"}, ["C", "B", "A"]),
    ({"sort": "current", "order": "desc"}, ["B", "C", "A"]),
])
async def test_client_aging_filters_and_sorts(client, token, tenant, params, expected):
    report = (await get(client, token, tenant, "/v1/aging", **params)).json()
    assert [c["client_id"] for c in report["clients"]] == expected


async def test_client_aging_pages_and_exports_csv(client, token, tenant):
    first = (await get(client, token, tenant, "/v1/aging", limit=2)).json()
    second = (await get(client, token, tenant, "/v1/aging", limit=2, cursor=first["next_cursor"])).json()
    assert [c["client_id"] for c in first["clients"]] == ["C", "B"]
    assert [c["client_id"] for c in second["clients"]] == ["A"] and second["next_cursor"] is None
    exported = await get(client, token, tenant, "/v1/aging", format="csv")
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["client_id"] for r in rows] == ["C", "B", "A"]
    assert rows[0]["d90_plus"] == "40000" and rows[0]["name"] == "Cobalt Freight"


async def test_open_invoices_filter_sort_and_paginate(client, token, tenant):
    ids = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await get(client, token, tenant, "/v1/aging/invoices", **params)).json()
        ids += [i["invoice_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert ids == ["I5", "I6", "I2", "I4", "I3"]  # oldest due first

    by_balance = (await get(client, token, tenant, "/v1/aging/invoices", sort="balance", order="desc")).json()
    assert [i["invoice_id"] for i in by_balance["items"]] == ["I5", "I3", "I2", "I4", "I6"]
    current = (await get(client, token, tenant, "/v1/aging/invoices", bucket="current")).json()["items"]
    assert [(i["invoice_id"], i["days_past_due"], i["bucket"]) for i in current] == [("I3", 0, "current")]
    partial = (await get(client, token, tenant, "/v1/aging/invoices", status="partially_paid")).json()["items"]
    assert sorted(i["invoice_id"] for i in partial) == ["I2", "I4"]
    escalated = (await get(client, token, tenant, "/v1/aging/invoices", collection_state="escalated")).json()["items"]
    assert [i["invoice_id"] for i in escalated] == ["I5", "I6"]
    i5 = escalated[0]
    assert i5["failed_attempts"] == 1 and i5["bucket"] == "d90_plus" and i5["client_name"] == "Cobalt Freight"


async def test_open_invoices_export_every_row_as_csv(client, token, tenant):
    exported = await get(client, token, tenant, "/v1/aging/invoices", format="csv", sort="number")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["number"] for r in rows] == ["INV-I2", "INV-I3", "INV-I4", "INV-I5", "INV-I6"]
    assert sum(int(r["balance_minor"]) for r in rows) == 125_000


@pytest.mark.parametrize("path, params", [
    ("/v1/aging/invoices", {"cursor": "bm9wZQ"}),  # not JSON
    ("/v1/aging/invoices", {"sort": "balance", "cursor": "WyIyMDI2LTAxLTAxIiwgIngiXQ"}),  # a due_on cursor
    ("/v1/aging", {"sort": "name", "cursor": "WzEyMywgIngiXQ"}),  # a total cursor
    ("/v1/exceptions", {"cursor": "WzEsIDJd"}),
])
async def test_a_forged_cursor_is_a_clean_400(client, token, tenant, path, params):
    response = await client.get(path, params=params, headers=token(tenant, "ar:read"))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
