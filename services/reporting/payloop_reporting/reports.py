"""The service layer: read models and metric functions put together into what the API answers."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from fractions import Fraction
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from payloop.problems import Problem

from payloop_reporting import metrics as m
from payloop_reporting import repository as repo
from payloop_reporting.schemas import (
    AgingReport, Buckets, ClientAging, ClientDetail, DaysToPayDrift, DriftAlert, DriftReport, ExceptionItem,
    ExceptionPage, InvoiceAging, InvoiceAgingPage, Metrics, MetricsSeries, OverdueRate, TrendPoint,
)

MAX_SERIES_POINTS = 400


# --- cursors ------------------------------------------------------------------------------------

def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> list[Any] | None:
    if not cursor:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, json.JSONDecodeError):
        raise Problem(400, "Bad Request", "the cursor is not one this API handed out") from None
    if not isinstance(values, list) or len(values) != 2:
        raise Problem(400, "Bad Request", "the cursor is not one this API handed out")
    return values


# --- number formatting at the edge --------------------------------------------------------------

def _ratio(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _days(value: Fraction | None) -> float | None:
    return None if value is None else round(float(value), 1)


def _buckets(values: dict[str, int]) -> Buckets:
    return Buckets(**values, total=sum(values[b] for b in m.BUCKETS))


# --- aging --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientFilter:
    bucket: str | None = None
    client_id: str | None = None
    autopay: bool | None = None
    collection_state: str | None = None
    search: str | None = None


def _client_sort_key(row: ClientAging, sort: str) -> tuple:
    if sort == "name":
        value: Any = (row.name or row.client_id).lower()
    elif sort == "total":
        value = row.buckets.total
    elif sort == "oldest_days_past_due":
        value = row.oldest_days_past_due if row.oldest_days_past_due is not None else -10**9
    else:
        value = getattr(row.buckets, sort)
    return (value, row.client_id)


async def aging_report(session: AsyncSession, tenant_id: str, *, as_of: date | None, currency: str | None,
                       filters: ClientFilter, sort: str, descending: bool, cursor: str | None,
                       limit: int | None) -> AgingReport:
    """Per-client aging. Today's comes from the open-invoice indexes; another date is recomputed
    from the invoice facts with the same functions as the metrics."""
    ctx = await repo.tenant_context(session, tenant_id)
    currency = currency or ctx.currency
    today = ctx.today()
    day = as_of or today
    if day == today:
        raw = await repo.client_aging(session, tenant_id, today, currency)
        rows = [ClientAging(
            client_id=r["client_id"], name=r["name"],
            buckets=_buckets({b: r[b] for b in m.BUCKETS}), open_invoices=r["open_invoices"],
            oldest_days_past_due=(today - r["oldest_due_on"]).days if r["oldest_due_on"] else None,
            autopay_enrolled=r["autopay_enrolled"], collection_state=r["collection_state"],
            collection_level=r["collection_level"], promised_on=r["promised_on"]) for r in raw]
    else:
        rows = await _aging_from_facts(session, ctx, currency, day)
    totals = _buckets({b: sum(getattr(r.buckets, b) for r in rows) for b in m.BUCKETS})
    rows = [r for r in rows if _matches(r, filters)]
    rows.sort(key=lambda r: _client_sort_key(r, sort), reverse=descending)
    after = decode_cursor(cursor)
    if after is not None:
        marker = tuple(after)
        if not isinstance(marker[0], str if sort == "name" else int) or not isinstance(marker[1], str):
            raise Problem(400, "Bad Request", "the cursor does not match the sort order")
        rows = [r for r in rows if (_client_sort_key(r, sort) < marker if descending
                                    else _client_sort_key(r, sort) > marker)]
    next_cursor = None
    if limit is not None and len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(list(_client_sort_key(rows[-1], sort)))
    return AgingReport(as_of=day, currency=currency, totals=totals, clients=rows, next_cursor=next_cursor)


def _matches(row: ClientAging, f: ClientFilter) -> bool:
    return ((f.bucket is None or getattr(row.buckets, f.bucket) > 0)
            and (f.client_id is None or row.client_id == f.client_id)
            and (f.autopay is None or row.autopay_enrolled == f.autopay)
            and (f.collection_state is None or row.collection_state == f.collection_state)
            and (not f.search or f.search.lower() in (row.name or row.client_id).lower()))


async def _aging_from_facts(session: AsyncSession, ctx: repo.TenantContext, currency: str, day: date) -> list[ClientAging]:
    facts = await repo.invoice_facts(session, ctx, currency)
    clients = await repo.client_rows(session, ctx.tenant_id)
    by_client: dict[str, list[m.InvoiceFacts]] = {}
    for invoice in facts:
        if invoice.balance_on(day) > 0:
            by_client.setdefault(invoice.client_id, []).append(invoice)
    rows = []
    for client_id, invoices in by_client.items():
        info = clients.get(client_id, {})
        oldest = min(i.due_on for i in invoices)
        rows.append(ClientAging(
            client_id=client_id, name=info.get("name"), buckets=_buckets(m.aging(invoices, day)),
            open_invoices=len(invoices), oldest_days_past_due=(day - oldest).days,
            autopay_enrolled=info.get("autopay_enrolled", False),
            collection_state=info.get("collection_state", "none"),
            collection_level=info.get("collection_level"), promised_on=info.get("promised_on")))
    return rows


def _invoice_sort_value(row: dict[str, Any], sort: str) -> Any:
    return {"due_on": lambda: row["due_on"].isoformat(), "balance": lambda: row["balance_minor"],
            "number": lambda: row["number"]}[sort]()


def _typed_cursor_value(value: Any, sort: str) -> Any:
    """The cursor's sort value as the column's type; a cursor of another sort order is refused."""
    try:
        if sort == "due_on":
            return date.fromisoformat(value)
        if sort == "balance" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if sort == "number" and isinstance(value, str):
            return value
    except (TypeError, ValueError):
        pass
    raise Problem(400, "Bad Request", "the cursor does not match the sort order")


async def invoice_page(session: AsyncSession, tenant_id: str, filters: repo.InvoiceFilter, *, sort: str,
                       descending: bool, cursor: str | None, limit: int) -> InvoiceAgingPage:
    ctx = await repo.tenant_context(session, tenant_id)
    today = ctx.today()
    after = decode_cursor(cursor)
    if after is not None:
        if not isinstance(after[1], str):
            raise Problem(400, "Bad Request", "the cursor is not one this API handed out")
        after = [_typed_cursor_value(after[0], sort), after[1]]
    rows = await repo.open_invoices(session, tenant_id, today, filters, sort=sort, descending=descending,
                                    after=tuple(after) if after else None, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([_invoice_sort_value(rows[-1], sort), rows[-1]["invoice_id"]])
    items = []
    for row in rows:
        days = (today - row["due_on"]).days
        items.append(InvoiceAging(**row, days_past_due=days, bucket=m.bucket_of(days)))
    return InvoiceAgingPage(as_of=today, items=items, next_cursor=next_cursor)


# --- metrics ------------------------------------------------------------------------------------

def metrics_model(snap: m.Snapshot, currency: str, client_id: str | None) -> Metrics:
    return Metrics(
        as_of=snap.as_of, window_days=snap.window_days, currency=currency, client_id=client_id,
        receivables_minor=snap.receivables_minor, current_minor=snap.current_minor,
        credit_sales_minor=snap.credit_sales_minor, aging=_buckets(snap.aging), open_invoices=snap.open_invoices,
        dso=_days(snap.dso), countback_dso=_days(snap.countback_dso), best_possible_dso=_days(snap.best_possible_dso),
        overdue_rate=OverdueRate(by_count=_ratio(snap.overdue.by_count), by_amount=_ratio(snap.overdue.by_amount)),
        on_time_ratio=_ratio(snap.on_time_ratio), average_days_to_pay=_days(snap.average_days_to_pay),
        days_to_pay_drift=DaysToPayDrift(previous=_days(snap.drift.previous), current=_days(snap.drift.current),
                                         change=_days(snap.drift.change)),
        autopay_adoption=_ratio(snap.autopay_adoption), cei=_days(snap.cei))


async def metrics(session: AsyncSession, tenant_id: str, *, as_of: date | None, window_days: int,
                  currency: str | None, client_id: str | None) -> Metrics:
    ctx = await repo.tenant_context(session, tenant_id)
    currency = currency or ctx.currency
    facts = await repo.invoice_facts(session, ctx, currency, client_id)
    changes = await repo.autopay_changes(session, ctx, client_id)
    return metrics_model(m.snapshot(facts, changes, as_of or ctx.today(), window_days), currency, client_id)


async def series(session: AsyncSession, tenant_id: str, *, start: date | None, end: date | None, interval: str,
                 window_days: int, currency: str | None, client_id: str | None) -> MetricsSeries:
    ctx = await repo.tenant_context(session, tenant_id)
    currency = currency or ctx.currency
    end = end or ctx.today()
    start = start or end - timedelta(days={"day": 30, "week": 7 * 12, "month": 365}[interval])
    points = m.period_ends(start, end, interval)
    if len(points) > MAX_SERIES_POINTS:
        raise Problem(422, "Invalid input", f"at most {MAX_SERIES_POINTS} points; narrow the range or widen the interval")
    facts = await repo.invoice_facts(session, ctx, currency, client_id)
    changes = await repo.autopay_changes(session, ctx, client_id)
    return MetricsSeries(interval=interval, currency=currency, client_id=client_id, points=[
        metrics_model(m.snapshot(facts, changes, point, window_days), currency, client_id) for point in points])


async def drift(session: AsyncSession, tenant_id: str, *, as_of: date | None, window_days: int,
                threshold_days: int, currency: str | None) -> DriftReport:
    """Clients whose average days-to-pay grew by at least `threshold_days` window over window."""
    ctx = await repo.tenant_context(session, tenant_id)
    day = as_of or ctx.today()
    facts = await repo.invoice_facts(session, ctx, currency or ctx.currency)
    clients = await repo.client_rows(session, tenant_id)
    by_client: dict[str, list[m.InvoiceFacts]] = {}
    for invoice in facts:
        by_client.setdefault(invoice.client_id, []).append(invoice)
    alerts = []
    for client_id, invoices in by_client.items():
        d = m.days_to_pay_drift(invoices, day, window_days)
        if d.change is None or d.change < threshold_days:
            continue
        name = clients.get(client_id, {}).get("name") or client_id
        alerts.append(DriftAlert(
            client_id=client_id, name=clients.get(client_id, {}).get("name"), previous_days=_days(d.previous),
            current_days=_days(d.current), change_days=_days(d.change),
            message=(f"{name}: average days-to-pay from {_days(d.previous):g} to {_days(d.current):g} "
                     f"over the last {window_days} days")))
    alerts.sort(key=lambda a: (-a.change_days, a.client_id))
    return DriftReport(as_of=day, window_days=window_days, threshold_days=threshold_days, alerts=alerts)


# --- exceptions ---------------------------------------------------------------------------------

async def exception_page(session: AsyncSession, tenant_id: str, *, kind: str | None, include_resolved: bool,
                         cursor: str | None, limit: int) -> ExceptionPage:
    after = decode_cursor(cursor)
    if after is not None:
        try:
            after = [datetime.fromisoformat(after[0]), after[1]]
        except (TypeError, ValueError):
            raise Problem(400, "Bad Request", "the cursor is not one this API handed out") from None
        if not isinstance(after[1], str):
            raise Problem(400, "Bad Request", "the cursor is not one this API handed out")
    rows = await repo.exceptions(session, tenant_id, kind=kind, include_resolved=include_resolved,
                                 after=tuple(after) if after else None, limit=limit + 1)
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor([rows[-1]["occurred_at"].isoformat(), rows[-1]["exception_id"]])
    return ExceptionPage(items=[ExceptionItem(**row) for row in rows], next_cursor=next_cursor)


# --- client detail ------------------------------------------------------------------------------

async def client_detail(session: AsyncSession, tenant_id: str, client_id: str, *, window_days: int,
                        as_of: date | None) -> ClientDetail | None:
    """None until an event about the client has arrived (the caller answers 404)."""
    ctx = await repo.tenant_context(session, tenant_id)
    info = await repo.client(session, tenant_id, client_id)
    if info is None:
        return None
    day = as_of or ctx.today()
    facts = await repo.invoice_facts(session, ctx, ctx.currency, client_id)
    changes = await repo.autopay_changes(session, ctx, client_id)
    agreements = await repo.agreements(session, tenant_id, client_id)
    trend = []
    for point in m.period_ends(day - timedelta(days=365), day, "month"):
        trend.append(TrendPoint(period_end=point,
                                average_days_to_pay=_days(m.average_days_to_pay(facts, point, window_days)),
                                on_time_ratio=_ratio(m.on_time_ratio(facts, point, window_days)),
                                receivables_minor=m.receivables(facts, point)))
    return ClientDetail(
        client_id=client_id, name=info.get("name"), psa_source=info.get("psa_source"),
        terms=info.get("terms"), billing_emails=info.get("billing_emails") or [],
        contract_kinds=sorted({a["kind"] for a in agreements}), agreements=agreements,
        autopay_enrolled=info["autopay_enrolled"], autopay_method_id=info.get("autopay_method_id"),
        collection_state=info["collection_state"], collection_level=info.get("collection_level"),
        collection_step=info.get("collection_step"), paused_reason=info.get("paused_reason"),
        paused_until=info.get("paused_until"), promised_on=info.get("promised_on"),
        promised_minor=info.get("promised_minor"),
        metrics=metrics_model(m.snapshot(facts, changes, day, window_days), ctx.currency, client_id),
        invoices=await repo.client_invoices(session, tenant_id, client_id, 200),
        payments=await repo.client_payments(session, tenant_id, client_id, 100),
        timeline=[{**row, "event_id": str(row["event_id"])}
                  for row in await repo.client_timeline(session, tenant_id, client_id, 200)],
        trend=trend)
