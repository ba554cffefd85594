"""Routes of the reporting API (/v1): aging, invoices, client detail, metrics, drift, exceptions.

Every route needs `ar:read` and answers only from the caller's tenant. Formulas of every metric are
in `metrics.py` and docs/reporting.md.
"""
from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import date
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES, NotFound

from payloop_reporting import reports
from payloop_reporting import repository as repo
from payloop_reporting.metrics import BUCKETS
from payloop_reporting.schemas import (
    AgingReport, Bucket, ClientDetail, CollectionState, DriftReport, ExceptionKind, ExceptionPage, InvoiceAgingPage, Metrics,
    MetricsSeries,
)

router = APIRouter(prefix="/v1", tags=["reporting"], responses=PROBLEM_RESPONSES)

CSV_PAGE = 5000
METRICS_DOC = """
Formulas, all as of `as_of` (default: today in the tenant's timezone), over a window of `window_days`
ending on it; money in minor units of `currency` (default: the tenant's):

- AR = sum of open balances; current AR = the part not yet due.
- Credit sales = totals of invoices issued in the window, not void.
- DSO = AR / credit sales x window days. Best possible DSO = current AR / credit sales x window days.
- Countback DSO: from as_of's month backwards, subtract each month's credit sales from AR; add the days
  of every month fully absorbed and, for the month where AR runs out, its days x remaining AR / its sales.
- Overdue rate = past-due open invoices / open invoices (by count) and past-due AR / AR (by amount).
- Average days-to-pay = mean of (paid date - issue date) of invoices fully paid in the window;
  on-time ratio = share of those paid on or before their due date; drift = this window's average
  minus the previous window's.
- Auto-pay adoption = enrolled clients / clients with AR or an invoice in the window.
- CEI = (AR at window start + credit sales - AR) / (AR at window start + credit sales - current AR) x 100.
"""


def _csv_response(rows: AsyncIterator[list] | list[list], filename: str) -> StreamingResponse:
    async def lines():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        async for row in _aiter(rows):
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    return StreamingResponse(lines(), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


async def _record_export(session: AsyncSession, principal: Principal, report: str, filters: dict) -> None:
    """Exports take a tenant's client list out of Payloop, so each is audited (in the request's unit of work)."""
    await audit.record(session, principal, "report.exported", ("report", report),
                       {"format": "csv", **{k: v for k, v in filters.items() if v is not None}}, producer="reporting")


async def _aiter(rows):
    if isinstance(rows, list):
        for row in rows:
            yield row
    else:
        async for row in rows:
            yield row


@router.get("/aging", response_model=AgingReport, summary="Cross-client aging, one row per client",
            responses={200: {"content": {"text/csv": {}}}},
            description="Open balances by bucket (current, 1-30, 31-60, 61-90, over 90 days past due, in the "
                        "tenant's timezone) per client, with auto-pay and collection state. `format=csv` "
                        "exports every matching row.")
async def get_aging(
    as_of: date | None = None,
    currency: str | None = Query(None, pattern=r"^[A-Z]{3}$"),
    bucket: Bucket | None = Query(None, description="Only clients with a balance in this bucket"),
    client_id: str | None = None,
    autopay: bool | None = None,
    collection_state: CollectionState | None = None,
    q: str | None = Query(None, max_length=100, description="Client name contains"),
    sort: Literal["total", "name", "oldest_days_past_due", "current", "d1_30", "d31_60", "d61_90", "d90_plus"] = "total",
    order: Literal["asc", "desc"] = "desc",
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    format: Literal["json", "csv"] = "json",
    principal: Principal = require("ar:read"),
    session: AsyncSession = Depends(db_session),
):
    filters = reports.ClientFilter(bucket=bucket, client_id=client_id, autopay=autopay,
                                   collection_state=collection_state, search=q)
    report = await reports.aging_report(session, principal.tenant_id, as_of=as_of, currency=currency,
                                        filters=filters, sort=sort, descending=order == "desc",
                                        cursor=None if format == "csv" else cursor,
                                        limit=None if format == "csv" else limit)
    if format == "json":
        return report
    await _record_export(session, principal, "aging", {
        "as_of": report.as_of.isoformat(), "currency": currency, "bucket": bucket, "client_id": client_id,
        "autopay": autopay, "collection_state": collection_state, "q": q, "rows": len(report.clients)})
    header = ["client_id", "name", *BUCKETS, "total", "open_invoices", "oldest_days_past_due", "autopay_enrolled",
              "collection_state", "currency", "as_of"]
    rows = [header] + [[c.client_id, c.name or "", *(getattr(c.buckets, b) for b in BUCKETS), c.buckets.total,
                        c.open_invoices, c.oldest_days_past_due, c.autopay_enrolled, c.collection_state,
                        report.currency, report.as_of] for c in report.clients]
    return _csv_response(rows, f"aging-{report.as_of}.csv")


INVOICE_CSV_COLUMNS = ["invoice_id", "number", "client_id", "client_name", "currency", "issued_on", "due_on",
                       "days_past_due", "bucket", "total_minor", "balance_minor", "status", "autopay_enrolled",
                       "collection_state", "failed_attempts", "next_retry_at", "disputed", "promised_on"]


@router.get("/aging/invoices", response_model=InvoiceAgingPage, summary="Open invoices, filtered and sorted",
            responses={200: {"content": {"text/csv": {}}}},
            description="Open invoices (balance > 0) with cursor pagination: pass `next_cursor` back as `cursor` "
                        "with the same filters and sort. `format=csv` streams every matching invoice.")
async def get_open_invoices(
    request: Request,
    bucket: Bucket | None = None,
    client_id: str | None = None,
    status: Literal["open", "partially_paid"] | None = None,
    autopay: bool | None = None,
    collection_state: CollectionState | None = None,
    currency: str | None = Query(None, pattern=r"^[A-Z]{3}$"),
    sort: Literal["due_on", "balance", "number"] = "due_on",
    order: Literal["asc", "desc"] = "asc",
    cursor: str | None = None,
    limit: int = Query(100, ge=1, le=1000),
    format: Literal["json", "csv"] = "json",
    principal: Principal = require("ar:read"),
    session: AsyncSession = Depends(db_session),
):
    filters = repo.InvoiceFilter(bucket=bucket, client_id=client_id, status=status, autopay=autopay,
                                 collection_state=collection_state, currency=currency)
    descending = order == "desc"
    if format == "json":
        return await reports.invoice_page(session, principal.tenant_id, filters, sort=sort, descending=descending,
                                          cursor=cursor, limit=limit)
    await _record_export(session, principal, "open_invoices", {
        "bucket": bucket, "client_id": client_id, "status": status, "autopay": autopay,
        "collection_state": collection_state, "currency": currency})
    factory = request.app.state.session_factory
    tenant_id = principal.tenant_id

    async def rows():
        # Its own session: the stream outlives the request's unit of work.
        yield INVOICE_CSV_COLUMNS
        page_cursor = None
        async with factory() as own:
            while True:
                page = await reports.invoice_page(own, tenant_id, filters, sort=sort, descending=descending,
                                                  cursor=page_cursor, limit=CSV_PAGE)
                for item in page.items:
                    values = item.model_dump()
                    yield [values[c] if values[c] is not None else "" for c in INVOICE_CSV_COLUMNS]
                if page.next_cursor is None:
                    return
                page_cursor = page.next_cursor

    return _csv_response(rows(), "open-invoices.csv")


@router.get("/clients/{client_id}", response_model=ClientDetail, summary="One client: contract, invoices, "
            "payments, collection timeline and behaviour trend")
async def get_client(client_id: str, as_of: date | None = None, window_days: int = Query(90, ge=7, le=730),
                     principal: Principal = require("ar:read"),
                     session: AsyncSession = Depends(db_session)) -> ClientDetail:
    detail = await reports.client_detail(session, principal.tenant_id, client_id, window_days=window_days,
                                         as_of=as_of)
    if detail is None:
        raise NotFound("client")
    return detail


@router.get("/metrics", response_model=Metrics, summary="Every receivables metric as of a date",
            description=METRICS_DOC)
async def get_metrics(as_of: date | None = None, window_days: int = Query(90, ge=7, le=730),
                      currency: str | None = Query(None, pattern=r"^[A-Z]{3}$"), client_id: str | None = None,
                      principal: Principal = require("ar:read"),
                      session: AsyncSession = Depends(db_session)) -> Metrics:
    return await reports.metrics(session, principal.tenant_id, as_of=as_of, window_days=window_days,
                                 currency=currency, client_id=client_id)


@router.get("/metrics/series", response_model=MetricsSeries, summary="Metrics at the end of each day, week or month",
            description="Each point is the metrics as of the period's last day (weeks end on Sunday; the last "
                        "point is clipped to `end`)." + METRICS_DOC)
async def get_metrics_series(start: date | None = None, end: date | None = None,
                             interval: Literal["day", "week", "month"] = "month",
                             window_days: int = Query(90, ge=7, le=730),
                             currency: str | None = Query(None, pattern=r"^[A-Z]{3}$"), client_id: str | None = None,
                             principal: Principal = require("ar:read"),
                             session: AsyncSession = Depends(db_session)) -> MetricsSeries:
    return await reports.series(session, principal.tenant_id, start=start, end=end, interval=interval,
                                window_days=window_days, currency=currency, client_id=client_id)


@router.get("/drift", response_model=DriftReport, summary="Clients paying slower than before",
            description="Clients whose average days-to-pay over the last `window_days` exceeds the average over "
                        "the window before by at least `threshold_days`.")
async def get_drift(as_of: date | None = None, window_days: int = Query(90, ge=7, le=730),
                    threshold_days: int = Query(7, ge=1, le=365),
                    currency: str | None = Query(None, pattern=r"^[A-Z]{3}$"),
                    principal: Principal = require("ar:read"),
                    session: AsyncSession = Depends(db_session)) -> DriftReport:
    return await reports.drift(session, principal.tenant_id, as_of=as_of, window_days=window_days,
                               threshold_days=threshold_days, currency=currency)


@router.get("/exceptions", response_model=ExceptionPage, summary="What needs attention, and what to do",
            description="Failed payments with their next retry, disputes, PSA sync failures, GL posting failures, "
                        "payouts with charges we cannot match and dead letters of every consumer group; newest first.")
async def get_exceptions(
    kind: ExceptionKind | None = None,
    include_resolved: bool = False, cursor: str | None = None, limit: int = Query(50, ge=1, le=500),
    principal: Principal = require("ar:read"), session: AsyncSession = Depends(db_session),
) -> ExceptionPage:
    return await reports.exception_page(session, principal.tenant_id, kind=kind, include_resolved=include_resolved,
                                        cursor=cursor, limit=limit)
