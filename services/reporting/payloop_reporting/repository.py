"""Every read query of the reporting service; each one is bounded by the caller's tenant."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.tenant_replica import load_profile

from payloop_reporting.metrics import AutopayChange, InvoiceFacts, Reduction


@dataclass(frozen=True)
class TenantContext:
    tenant_id: str
    timezone: ZoneInfo
    currency: str

    def today(self) -> date:
        return datetime.now(self.timezone).date()

    def local_date(self, instant: datetime) -> date:
        return instant.astimezone(self.timezone).date()


async def tenant_context(session: AsyncSession, tenant_id: str) -> TenantContext:
    """The tenant's timezone and currency from the profile replica (UTC/USD until it arrives)."""
    profile = await load_profile(session, tenant_id)
    if profile is None:
        return TenantContext(tenant_id, ZoneInfo("UTC"), "USD")
    try:
        zone = ZoneInfo(profile.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")  # a profile with an unknown zone must not take the reports down
    return TenantContext(tenant_id, zone, profile.currency)


# --- aging --------------------------------------------------------------------------------------

# Days past due -> the due-date range of a bucket, relative to `today` (inclusive bounds).
BUCKET_DAYS: dict[str, tuple[int | None, int | None]] = {
    "current": (None, 0), "d1_30": (1, 30), "d31_60": (31, 60), "d61_90": (61, 90), "d90_plus": (91, None),
}


def due_range(bucket: str, today: date) -> tuple[date | None, date | None]:
    """(earliest due date, latest due date) of the invoices in `bucket` on `today`."""
    low, high = BUCKET_DAYS[bucket]
    return (today - timedelta(days=high) if high is not None else None,
            today - timedelta(days=low) if low is not None else None)


# From the open-balance totals per client and due date (migration 0003), not from every invoice.
_CLIENT_AGING = text("""
SELECT c.client_id, c.name, c.autopay_enrolled, c.collection_state, c.collection_level, c.promised_on,
    COALESCE(a.current, 0) AS current, COALESCE(a.d1_30, 0) AS d1_30, COALESCE(a.d31_60, 0) AS d31_60,
    COALESCE(a.d61_90, 0) AS d61_90, COALESCE(a.d90_plus, 0) AS d90_plus, COALESCE(a.total, 0) AS total,
    COALESCE(a.open_invoices, 0) AS open_invoices, a.oldest_due_on
FROM (
    SELECT client_id,
        sum(balance_minor) FILTER (WHERE due_on >= :today) AS current,
        sum(balance_minor) FILTER (WHERE due_on < :today AND due_on >= :less30) AS d1_30,
        sum(balance_minor) FILTER (WHERE due_on < :less30 AND due_on >= :less60) AS d31_60,
        sum(balance_minor) FILTER (WHERE due_on < :less60 AND due_on >= :less90) AS d61_90,
        sum(balance_minor) FILTER (WHERE due_on < :less90) AS d90_plus,
        sum(balance_minor) AS total, sum(invoices) AS open_invoices, min(due_on) AS oldest_due_on
    FROM open_balances WHERE tenant_id = :t AND currency = :currency
    GROUP BY client_id
) a JOIN clients c ON c.tenant_id = :t AND c.client_id = a.client_id
""")


async def client_aging(session: AsyncSession, tenant_id: str, today: date, currency: str) -> list[dict[str, Any]]:
    rows = await session.execute(_CLIENT_AGING, {
        "t": tenant_id, "today": today, "currency": currency, "less30": today - timedelta(days=30),
        "less60": today - timedelta(days=60), "less90": today - timedelta(days=90)})
    return [dict(row) for row in rows.mappings()]


async def client_rows(session: AsyncSession, tenant_id: str) -> dict[str, dict[str, Any]]:
    rows = await session.execute(text("""
        SELECT client_id, name, autopay_enrolled, collection_state, collection_level, promised_on
        FROM clients WHERE tenant_id = :t"""), {"t": tenant_id})
    return {row["client_id"]: dict(row) for row in rows.mappings()}


INVOICE_SORTS = {"due_on": "i.due_on", "balance": "i.balance_minor", "number": "i.number"}


@dataclass(frozen=True)
class InvoiceFilter:
    bucket: str | None = None
    client_id: str | None = None
    status: str | None = None
    autopay: bool | None = None
    collection_state: str | None = None
    currency: str | None = None


async def open_invoices(session: AsyncSession, tenant_id: str, today: date, filters: InvoiceFilter, *,
                        sort: str, descending: bool, after: tuple[Any, str] | None, limit: int) -> list[dict[str, Any]]:
    """Open invoices with keyset pagination on (sort column, invoice_id), served by the partial indexes."""
    column = INVOICE_SORTS[sort]
    where = ["i.tenant_id = :t", "i.balance_minor > 0"]
    params: dict[str, Any] = {"t": tenant_id, "today": today, "limit": limit}
    if filters.bucket:
        earliest, latest = due_range(filters.bucket, today)
        if earliest is not None:
            where.append("i.due_on >= :earliest")
            params["earliest"] = earliest
        if latest is not None:
            where.append("i.due_on <= :latest")
            params["latest"] = latest
    if filters.client_id:
        where.append("i.client_id = :client")
        params["client"] = filters.client_id
    if filters.status:
        where.append("i.status = :status")
        params["status"] = filters.status
    if filters.currency:
        where.append("i.currency = :currency")
        params["currency"] = filters.currency
    if filters.autopay is not None:
        where.append("c.autopay_enrolled = :autopay")
        params["autopay"] = filters.autopay
    if filters.collection_state:
        where.append("c.collection_state = :collection_state")
        params["collection_state"] = filters.collection_state
    if after is not None:
        where.append(f"({column}, i.invoice_id) {'<' if descending else '>'} (:after_value, :after_id)")
        params["after_value"], params["after_id"] = after
    order = "DESC" if descending else "ASC"
    rows = await session.execute(text(f"""
        SELECT i.invoice_id, i.client_id, c.name AS client_name, i.number, i.currency, i.issued_on, i.due_on,
            i.total_minor, i.balance_minor, i.status, i.agreement_kind, c.autopay_enrolled, c.collection_state,
            i.failed_attempts, i.next_retry_at, i.last_payment_at, i.disputed, i.promised_on,
            i.last_reminder_step, i.last_reminder_level, i.last_reminder_at
        FROM invoices i JOIN clients c ON c.tenant_id = i.tenant_id AND c.client_id = i.client_id
        WHERE {' AND '.join(where)}
        ORDER BY {column} {order}, i.invoice_id {order}
        LIMIT :limit"""), params)
    return [dict(row) for row in rows.mappings()]


# --- facts for the metrics ----------------------------------------------------------------------

async def invoice_facts(session: AsyncSession, ctx: TenantContext, currency: str,
                        client_id: str | None = None) -> list[InvoiceFacts]:
    """Every invoice of the tenant (or one client) in one currency, with its dated reductions."""
    client_filter = "AND i.client_id = :client" if client_id else ""
    params = {"t": ctx.tenant_id, "currency": currency, "client": client_id}
    invoices = (await session.execute(text(f"""
        SELECT invoice_id, client_id, total_minor, issued_on, due_on, voided_at, psa_status, snapshot_at,
               outside_paid_minor, outside_paid_at, psa_paid_on
        FROM invoices i WHERE i.tenant_id = :t AND i.currency = :currency {client_filter}"""), params)).all()
    reductions: dict[str, list[Reduction]] = {}
    rows = await session.execute(text(f"""
        SELECT r.invoice_id, r.amount_minor, r.reduced_at, r.reduced_on
        FROM invoice_reductions r JOIN invoices i ON i.tenant_id = r.tenant_id AND i.invoice_id = r.invoice_id
        WHERE r.tenant_id = :t AND i.currency = :currency {client_filter}"""), params)
    for invoice_id, amount, reduced_at, reduced_on in rows:
        reductions.setdefault(invoice_id, []).append(
            Reduction(reduced_on or ctx.local_date(reduced_at), amount))
    facts = []
    for row in invoices:
        own = reductions.get(row.invoice_id, [])
        if row.outside_paid_minor:
            # Paid in the PSA: on the PSA's own paid date where it gave one, else when we saw the balance drop.
            own.append(Reduction(row.psa_paid_on or ctx.local_date(row.outside_paid_at), row.outside_paid_minor))
        facts.append(InvoiceFacts(
            invoice_id=row.invoice_id, client_id=row.client_id, total_minor=row.total_minor,
            issued_on=row.issued_on, due_on=row.due_on, reductions=tuple(own),
            voided_on=ctx.local_date(row.voided_at) if row.voided_at else None,
            written_off_on=ctx.local_date(row.snapshot_at) if row.psa_status == "written_off" else None,
        ))
    return facts


async def autopay_changes(session: AsyncSession, ctx: TenantContext, client_id: str | None = None) -> list[AutopayChange]:
    client_filter = "AND client_id = :client" if client_id else ""
    rows = await session.execute(text(f"""
        SELECT client_id, occurred_at, enrolled FROM autopay_changes
        WHERE tenant_id = :t {client_filter} ORDER BY occurred_at"""), {"t": ctx.tenant_id, "client": client_id})
    return [AutopayChange(client, ctx.local_date(at), enrolled) for client, at, enrolled in rows]


# --- client detail ------------------------------------------------------------------------------

async def client(session: AsyncSession, tenant_id: str, client_id: str) -> dict[str, Any] | None:
    row = (await session.execute(text("""
        SELECT client_id, name, psa_source, terms, billing_emails, autopay_enrolled, autopay_method_id, autopay_at,
            collection_state, collection_level, collection_step, collection_case_id, paused_reason, paused_until,
            promised_on, promised_minor, collection_at
        FROM clients WHERE tenant_id = :t AND client_id = :c"""), {"t": tenant_id, "c": client_id})).mappings().first()
    return dict(row) if row else None


async def agreements(session: AsyncSession, tenant_id: str, client_id: str) -> list[dict[str, Any]]:
    rows = await session.execute(text("""
        SELECT agreement_id, kind, name, billing_cycle, starts_on, ends_on, lines FROM agreements
        WHERE tenant_id = :t AND client_id = :c ORDER BY starts_on NULLS LAST, agreement_id"""),
        {"t": tenant_id, "c": client_id})
    return [dict(row) for row in rows.mappings()]


async def client_invoices(session: AsyncSession, tenant_id: str, client_id: str, limit: int) -> list[dict[str, Any]]:
    """Open invoices first (oldest due first), then the most recent others."""
    rows = await session.execute(text("""
        SELECT invoice_id, number, currency, issued_on, due_on, total_minor, balance_minor, status, agreement_kind,
            paid_at, failed_attempts, next_retry_at, last_payment_at, disputed, promised_on,
            last_reminder_step, last_reminder_level, last_reminder_at
        FROM invoices WHERE tenant_id = :t AND client_id = :c
        ORDER BY (balance_minor > 0) DESC, CASE WHEN balance_minor > 0 THEN due_on END, issued_on DESC, invoice_id
        LIMIT :limit"""), {"t": tenant_id, "c": client_id, "limit": limit})
    return [dict(row) for row in rows.mappings()]


async def client_payments(session: AsyncSession, tenant_id: str, client_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await session.execute(text("""
        SELECT payment_id, status, currency, amount_minor, fee_minor, refunded_minor, method_type, method_brand,
            method_last4, attempt, settled_at, status_at, allocations
        FROM payments WHERE tenant_id = :t AND client_id = :c ORDER BY status_at DESC, payment_id LIMIT :limit"""),
        {"t": tenant_id, "c": client_id, "limit": limit})
    return [dict(row) for row in rows.mappings()]


async def client_timeline(session: AsyncSession, tenant_id: str, client_id: str, limit: int) -> list[dict[str, Any]]:
    rows = await session.execute(text("""
        SELECT event_id, occurred_at, kind, summary, amount_minor, currency, invoice_ids
        FROM timeline WHERE tenant_id = :t AND client_id = :c ORDER BY occurred_at DESC, event_id LIMIT :limit"""),
        {"t": tenant_id, "c": client_id, "limit": limit})
    return [dict(row) for row in rows.mappings()]


# --- exceptions ---------------------------------------------------------------------------------

async def exceptions(session: AsyncSession, tenant_id: str, *, kind: str | None, include_resolved: bool,
                     after: tuple[datetime, str] | None, limit: int) -> list[dict[str, Any]]:
    where = ["tenant_id = :t"]
    params: dict[str, Any] = {"t": tenant_id, "limit": limit}
    if not include_resolved:
        where.append("resolved_at IS NULL")
    if kind:
        where.append("kind = :kind")
        params["kind"] = kind
    if after is not None:
        where.append("(occurred_at, exception_id) < (:after_at, :after_id)")
        params["after_at"], params["after_id"] = after
    rows = await session.execute(text(f"""
        SELECT exception_id, kind, client_id, subject_id, title, detail, action, action_href, retryable,
            next_attempt_at, occurred_at, resolved_at
        FROM exceptions WHERE {' AND '.join(where)}
        ORDER BY occurred_at DESC, exception_id DESC LIMIT :limit"""), params)
    return [dict(row) for row in rows.mappings()]
