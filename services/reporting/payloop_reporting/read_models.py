"""The write side of the read models: set-based SQL that the event handlers call.

Events arrive at least once, in order only per key and topic, so across topics a payment can come
before its invoice. Every write here is therefore an upsert that keeps the newest fact by the
event's `occurred_at`, or an insert of an immutable fact keyed by its own id; derived columns
(an invoice's balance, status, failed attempts, collection flags) are recomputed from the stored
facts by `refresh_invoices`, so the result does not depend on arrival order.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

READ_MODEL_TABLES = ("open_balances", "exceptions", "gl_postings", "payouts", "tickets", "timeline", "payment_failures",
                     "payments", "invoice_voids", "invoice_reductions", "invoices", "agreements",
                     "autopay_changes", "clients")


def _json(value: Any) -> str:
    return json.dumps(value, default=str)


async def ensure_client(session: AsyncSession, tenant_id: str, client_id: str | None) -> None:
    await ensure_clients(session, [(tenant_id, client_id)])


async def ensure_clients(session: AsyncSession, keys: Sequence[tuple[str, str | None]]) -> None:
    """A placeholder row, so a client's invoices and payments show before its profile arrives."""
    rows = [{"t": tenant_id, "c": client_id} for tenant_id, client_id in dict.fromkeys(keys) if client_id]
    if rows:
        await session.execute(text(
            "INSERT INTO clients (tenant_id, client_id) VALUES (:t, :c) ON CONFLICT DO NOTHING"), rows)


async def upsert_client_profile(session: AsyncSession, tenant_id: str, client_id: str, *, name: str,
                                psa_source: str, terms: str | None, billing_emails: list[str],
                                occurred_at: datetime) -> None:
    await session.execute(text("""
        INSERT INTO clients (tenant_id, client_id, name, psa_source, terms, billing_emails, profile_at)
        VALUES (:t, :c, :name, :source, :terms, CAST(:emails AS jsonb), :at)
        ON CONFLICT (tenant_id, client_id) DO UPDATE SET
            name = EXCLUDED.name, psa_source = EXCLUDED.psa_source, terms = EXCLUDED.terms,
            billing_emails = EXCLUDED.billing_emails, profile_at = EXCLUDED.profile_at
        WHERE clients.profile_at IS NULL OR clients.profile_at <= EXCLUDED.profile_at"""),
        {"t": tenant_id, "c": client_id, "name": name, "source": psa_source, "terms": terms,
         "emails": _json(billing_emails), "at": occurred_at})


async def record_autopay(session: AsyncSession, tenant_id: str, client_id: str, *, event_id, enrolled: bool,
                         method_id: str | None, occurred_at: datetime) -> None:
    await session.execute(text("""
        INSERT INTO autopay_changes (tenant_id, event_id, client_id, enrolled, occurred_at)
        VALUES (:t, :e, :c, :enrolled, :at) ON CONFLICT DO NOTHING"""),
        {"t": tenant_id, "e": event_id, "c": client_id, "enrolled": enrolled, "at": occurred_at})
    await session.execute(text("""
        UPDATE clients SET autopay_enrolled = :enrolled, autopay_method_id = :method, autopay_at = :at
        WHERE tenant_id = :t AND client_id = :c AND (autopay_at IS NULL OR autopay_at <= :at)"""),
        {"t": tenant_id, "c": client_id, "enrolled": enrolled, "method": method_id, "at": occurred_at})


async def set_collection_state(session: AsyncSession, tenant_id: str, client_id: str, *, state: str,
                               occurred_at: datetime, level: str | None = None, step: int | None = None,
                               case_id: str | None = None, paused_reason: str | None = None,
                               paused_until: date | None = None, promised_on: date | None = None,
                               promised_minor: int | None = None) -> None:
    """The client's collection state is what its newest collection event says, all of it (fields that
    event does not carry are cleared, so the result does not depend on which older events came first)."""
    await session.execute(text("""
        UPDATE clients SET collection_state = :state, collection_at = :at,
            collection_level = :level, collection_step = :step, collection_case_id = :case_id,
            paused_reason = :paused_reason, paused_until = :paused_until,
            promised_on = :promised_on, promised_minor = :promised_minor
        WHERE tenant_id = :t AND client_id = :c AND (collection_at IS NULL OR collection_at <= :at)"""),
        {"t": tenant_id, "c": client_id, "state": state, "at": occurred_at, "level": level, "step": step,
         "case_id": case_id, "paused_reason": paused_reason, "paused_until": paused_until,
         "promised_on": promised_on, "promised_minor": promised_minor})


async def upsert_agreement(session: AsyncSession, tenant_id: str, data: dict[str, Any], occurred_at: datetime) -> None:
    await session.execute(text("""
        INSERT INTO agreements (tenant_id, agreement_id, client_id, kind, name, billing_cycle, starts_on,
                                ends_on, lines, occurred_at)
        VALUES (:t, :id, :c, :kind, :name, :cycle, :starts, :ends, CAST(:lines AS jsonb), :at)
        ON CONFLICT (tenant_id, agreement_id) DO UPDATE SET
            client_id = EXCLUDED.client_id, kind = EXCLUDED.kind, name = EXCLUDED.name,
            billing_cycle = EXCLUDED.billing_cycle, starts_on = EXCLUDED.starts_on, ends_on = EXCLUDED.ends_on,
            lines = EXCLUDED.lines, occurred_at = EXCLUDED.occurred_at
        WHERE agreements.occurred_at <= EXCLUDED.occurred_at"""),
        {"t": tenant_id, "id": data["agreement_id"], "c": data["client_id"], "kind": data["kind"],
         "name": data["name"], "cycle": data.get("billing_cycle"),
         "starts": _date(data.get("starts_on")), "ends": _date(data.get("ends_on")),
         "lines": _json(data.get("lines", [])), "at": occurred_at})


def _date(value: str | date | None) -> date | None:
    return date.fromisoformat(value) if isinstance(value, str) else value


async def upsert_invoices(session: AsyncSession,
                          snapshots: Sequence[tuple[str, str, dict[str, Any], datetime]]) -> None:
    """What the PSA says about invoices, (tenant, client, invoice data, event time) each, applied in
    order; an older snapshot never overwrites a newer one."""
    rows = []
    for tenant_id, client_id, data, occurred_at in snapshots:
        agreement = data.get("agreement") or {}
        rows.append({
            "t": tenant_id, "id": data["invoice_id"], "c": client_id, "number": data["number"],
            "agreement_id": agreement.get("id"), "agreement_kind": agreement.get("kind"),
            "currency": data["currency"], "issued": _date(data["issued_on"]), "due": _date(data["due_on"]),
            "terms": data.get("terms"), "status": data["status"], "total": data["total_minor"],
            "balance": data["balance_minor"], "paid_on": _date(data.get("paid_on")), "at": occurred_at})
    await session.execute(text("""
        INSERT INTO invoices (tenant_id, invoice_id, client_id, number, agreement_id, agreement_kind, currency,
                              issued_on, due_on, terms, psa_status, total_minor, psa_balance_minor, psa_paid_on,
                              snapshot_at, balance_minor)
        VALUES (:t, :id, :c, :number, :agreement_id, :agreement_kind, :currency, :issued, :due, :terms,
                :status, :total, :balance, :paid_on, :at, 0)
        ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET
            client_id = EXCLUDED.client_id, number = EXCLUDED.number, agreement_id = EXCLUDED.agreement_id,
            agreement_kind = EXCLUDED.agreement_kind, currency = EXCLUDED.currency,
            issued_on = EXCLUDED.issued_on, due_on = EXCLUDED.due_on, terms = EXCLUDED.terms,
            psa_status = EXCLUDED.psa_status, total_minor = EXCLUDED.total_minor,
            psa_balance_minor = EXCLUDED.psa_balance_minor, psa_paid_on = EXCLUDED.psa_paid_on,
            snapshot_at = EXCLUDED.snapshot_at
        WHERE invoices.snapshot_at <= EXCLUDED.snapshot_at"""), rows)


async def record_void(session: AsyncSession, tenant_id: str, invoice_id: str, voided_at: datetime) -> None:
    await session.execute(text("""
        INSERT INTO invoice_voids (tenant_id, invoice_id, voided_at) VALUES (:t, :i, :at)
        ON CONFLICT (tenant_id, invoice_id) DO UPDATE SET voided_at = LEAST(invoice_voids.voided_at, EXCLUDED.voided_at)"""),
        {"t": tenant_id, "i": invoice_id, "at": voided_at})


def reduction_rows(tenant_id: str, source: str, source_id: str, amounts: Sequence[tuple[str, int]],
                   reduced_at: datetime, reduced_on: date | None = None) -> list[dict[str, Any]]:
    """The balance reductions of one payment, refund or credit memo: one row per (invoice, amount)."""
    return [{"t": tenant_id, "invoice_id": invoice_id, "source": source, "source_id": source_id,
             "amount": amount, "at": reduced_at, "on": reduced_on} for invoice_id, amount in amounts]


async def record_reductions(session: AsyncSession, tenant_id: str, source: str, source_id: str,
                            amounts: Sequence[tuple[str, int]], reduced_at: datetime,
                            reduced_on: date | None = None) -> None:
    await add_reductions(session, reduction_rows(tenant_id, source, source_id, amounts, reduced_at,
                                                 reduced_on))


async def add_reductions(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows made by `reduction_rows`, applied in order: one reduction of the same source told again
    (a repeated payment.settled) overwrites the earlier one, as it would event by event."""
    if rows:
        await session.execute(text("""
            INSERT INTO invoice_reductions (tenant_id, invoice_id, source, source_id, amount_minor,
                                            reduced_at, reduced_on)
            VALUES (:t, :invoice_id, :source, :source_id, :amount, :at, :on)
            ON CONFLICT (tenant_id, invoice_id, source, source_id) DO UPDATE SET
                amount_minor = EXCLUDED.amount_minor, reduced_at = EXCLUDED.reduced_at,
                reduced_on = EXCLUDED.reduced_on"""), list(rows))


# Statuses by how final they are: an event reporting a less final status than the stored one loses
# even if it is newer (a late "initiated" must not undo "succeeded").
_PAYMENT_RANK = {"processing": 0, "failed": 1, "succeeded": 2, "partially_refunded": 3, "refunded": 3, "disputed": 4}


_UPSERT_PAYMENT = text("""
    INSERT INTO payments (tenant_id, payment_id, client_id, currency, amount_minor, fee_minor, status,
                          status_at, method_type, method_brand, method_last4, attempt, settled_at,
                          allocations)
    VALUES (:t, :id, :c, :currency, :amount, :fee, :status, :at, :mtype, :brand, :last4, :attempt,
            :settled_at, CAST(:allocations AS jsonb))
    ON CONFLICT (tenant_id, payment_id) DO UPDATE SET
        client_id = COALESCE(payments.client_id, EXCLUDED.client_id),
        amount_minor = EXCLUDED.amount_minor, currency = EXCLUDED.currency,
        fee_minor = GREATEST(payments.fee_minor, EXCLUDED.fee_minor),
        method_type = EXCLUDED.method_type, method_brand = EXCLUDED.method_brand,
        method_last4 = EXCLUDED.method_last4, allocations = EXCLUDED.allocations,
        attempt = GREATEST(payments.attempt, EXCLUDED.attempt),
        settled_at = COALESCE(EXCLUDED.settled_at, payments.settled_at),
        status = CASE WHEN :rank >= (CASE payments.status {ranks} END) THEN EXCLUDED.status
                      ELSE payments.status END,
        status_at = GREATEST(payments.status_at, EXCLUDED.status_at)""".replace(
    "{ranks}", " ".join(f"WHEN '{s}' THEN {r}" for s, r in _PAYMENT_RANK.items())))


def payment_row(tenant_id: str, client_id: str | None, data: dict[str, Any], *, status: str,
                occurred_at: datetime, settled_at: datetime | None = None) -> dict[str, Any]:
    method = data.get("method") or {}
    return {"t": tenant_id, "id": data["payment_id"], "c": client_id, "currency": data["currency"],
            "amount": data["amount_minor"], "fee": data.get("fee_minor", 0), "status": status,
            "at": occurred_at, "mtype": method.get("type"), "brand": method.get("brand"),
            "last4": method.get("last4"), "attempt": data.get("attempt", 1), "settled_at": settled_at,
            "allocations": _json(data.get("allocations", [])), "rank": _PAYMENT_RANK[status]}


async def upsert_payment(session: AsyncSession, tenant_id: str, client_id: str | None, data: dict[str, Any],
                         **facts: Any) -> None:
    await upsert_payments(session, [payment_row(tenant_id, client_id, data, **facts)])


async def upsert_payments(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Rows made by `payment_row`, applied in order, one statement each (pipelined): a payment can
    appear twice in a run, and each row's status rank is weighed against what the row before left."""
    if rows:
        await session.execute(_UPSERT_PAYMENT, list(rows))


async def record_refund(session: AsyncSession, tenant_id: str, payment_id: str, refund_id: str,
                        refunded_minor: int) -> None:
    await session.execute(text("""
        UPDATE payments SET refunds = refunds || jsonb_build_object(CAST(:refund AS text), CAST(:amount AS bigint))
        WHERE tenant_id = :t AND payment_id = :p"""),
        {"t": tenant_id, "p": payment_id, "refund": refund_id, "amount": refunded_minor})
    await session.execute(text("""
        UPDATE payments SET refunded_minor = (SELECT COALESCE(sum(value::bigint), 0) FROM jsonb_each_text(refunds)),
            status = CASE WHEN status = 'disputed' THEN status
                          WHEN (SELECT COALESCE(sum(value::bigint), 0) FROM jsonb_each_text(refunds)) >= amount_minor
                          THEN 'refunded' ELSE 'partially_refunded' END
        WHERE tenant_id = :t AND payment_id = :p"""), {"t": tenant_id, "p": payment_id})


async def record_payment_failure(session: AsyncSession, tenant_id: str, client_id: str | None, *, event_id,
                                 data: dict[str, Any], occurred_at: datetime) -> None:
    await session.execute(text("""
        INSERT INTO payment_failures (tenant_id, event_id, payment_id, client_id, attempt, decline_code, retryable,
                                      next_attempt_at, amount_minor, currency, invoice_ids, occurred_at)
        VALUES (:t, :e, :p, :c, :attempt, :decline, :retryable, :next, :amount, :currency,
                CAST(:invoices AS jsonb), :at) ON CONFLICT DO NOTHING"""),
        {"t": tenant_id, "e": event_id, "p": data["payment_id"], "c": client_id, "attempt": data.get("attempt", 1),
         "decline": data.get("decline_code"), "retryable": data["retryable"],
         "next": _instant(data.get("next_attempt_at")), "amount": data["amount_minor"], "currency": data["currency"],
         "invoices": _json([a["invoice_id"] for a in data.get("allocations", [])]), "at": occurred_at})


def _instant(value: str | datetime | None) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def timeline_row(tenant_id: str, client_id: str | None, *, event_id, kind: str, summary: str,
                 occurred_at: datetime, amount_minor: int | None = None, currency: str | None = None,
                 invoice_ids: Sequence[str] = (), data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"t": tenant_id, "e": event_id, "c": client_id, "at": occurred_at, "kind": kind, "summary": summary,
            "amount": amount_minor, "currency": currency, "invoices": _json(list(invoice_ids)),
            "data": _json(data or {})}


async def add_timeline(session: AsyncSession, tenant_id: str, client_id: str | None, **entry: Any) -> None:
    await add_timelines(session, [timeline_row(tenant_id, client_id, **entry)])


async def add_timelines(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Entries made by `timeline_row`; an entry told again (same event and kind) is kept once."""
    if rows:
        await session.execute(text("""
            INSERT INTO timeline (tenant_id, event_id, client_id, occurred_at, kind, summary, amount_minor,
                                  currency, invoice_ids, data)
            VALUES (:t, :e, :c, :at, :kind, :summary, :amount, :currency, CAST(:invoices AS jsonb),
                    CAST(:data AS jsonb))
            ON CONFLICT DO NOTHING"""), list(rows))


async def upsert_ticket(session: AsyncSession, tenant_id: str, client_id: str | None, data: dict[str, Any],
                        occurred_at: datetime) -> None:
    await session.execute(text("""
        INSERT INTO tickets (tenant_id, ticket_id, client_id, invoice_ids, open, summary, occurred_at)
        VALUES (:t, :id, :c, CAST(:invoices AS jsonb), :open, :summary, :at)
        ON CONFLICT (tenant_id, ticket_id) DO UPDATE SET invoice_ids = EXCLUDED.invoice_ids, open = EXCLUDED.open,
            summary = EXCLUDED.summary, occurred_at = EXCLUDED.occurred_at
        WHERE tickets.occurred_at <= EXCLUDED.occurred_at"""),
        {"t": tenant_id, "id": data["ticket_id"], "c": client_id, "invoices": _json(data["invoice_ids"]),
         "open": data.get("open", True), "summary": data.get("summary"), "at": occurred_at})


# Balance = the smaller of what the PSA last said and the total minus the reductions we know of:
# our payments show at once, before the PSA hears of them, and payments we never see (a cheque
# recorded in the PSA) show when the PSA's balance drops (`outside_paid_minor`), dated by the PSA's
# paid date where it gives one (`psa_paid_on`, at noon UTC: that same day in every timezone within
# 11 hours of UTC; the metrics read the date itself), else by when we first saw the drop.
_REFRESH = text("""
WITH facts AS (
    SELECT i.tenant_id, i.invoice_id,
        COALESCE(v.voided_at, CASE WHEN i.psa_status = 'void' THEN i.snapshot_at END) AS voided_at,
        COALESCE((SELECT sum(r.amount_minor) FROM invoice_reductions r
                  WHERE r.tenant_id = i.tenant_id AND r.invoice_id = i.invoice_id), 0) AS reduced,
        (SELECT max(r.reduced_at) FROM invoice_reductions r WHERE r.tenant_id = i.tenant_id
            AND r.invoice_id = i.invoice_id AND r.source = 'payment') AS last_payment_at,
        (SELECT max(r.reduced_at) FROM invoice_reductions r WHERE r.tenant_id = i.tenant_id
            AND r.invoice_id = i.invoice_id AND r.amount_minor > 0) AS last_reduced_at,
        (SELECT bool_or(t.open) FROM tickets t WHERE t.tenant_id = i.tenant_id AND t.client_id = i.client_id
            AND t.invoice_ids ? i.invoice_id) AS disputed,
        (SELECT t.data FROM timeline t WHERE t.tenant_id = i.tenant_id AND t.client_id = i.client_id
            AND t.kind = 'reminder' AND t.invoice_ids ? i.invoice_id
            ORDER BY t.occurred_at DESC LIMIT 1) AS reminder,
        (SELECT max(t.occurred_at) FROM timeline t WHERE t.tenant_id = i.tenant_id AND t.client_id = i.client_id
            AND t.kind = 'reminder' AND t.invoice_ids ? i.invoice_id) AS reminder_at,
        (SELECT (t.data->>'promised_on')::date FROM timeline t WHERE t.tenant_id = i.tenant_id
            AND t.client_id = i.client_id AND t.kind = 'promise' AND t.invoice_ids ? i.invoice_id
            ORDER BY t.occurred_at DESC LIMIT 1) AS promised_on
    -- Driven by the ids (one primary-key lookup each), never by a scan of the tenant's invoices.
    FROM unnest(CAST(:ids AS text[])) AS wanted(invoice_id)
    JOIN invoices i ON i.tenant_id = :t AND i.invoice_id = wanted.invoice_id
    LEFT JOIN invoice_voids v ON v.tenant_id = i.tenant_id AND v.invoice_id = i.invoice_id
), balances AS (
    SELECT o.*, CASE WHEN o.outside = 0 THEN NULL
                     WHEN o.psa_paid_on IS NOT NULL THEN (o.psa_paid_on + time '12:00') AT TIME ZONE 'UTC'
                     WHEN o.outside <> o.stored_outside OR o.stored_outside_at IS NULL THEN o.snapshot_at
                     ELSE o.stored_outside_at END AS outside_at
    FROM (
        SELECT f.*, i.total_minor, i.psa_status, i.psa_paid_on, i.snapshot_at, i.client_id,
            i.outside_paid_minor AS stored_outside, i.outside_paid_at AS stored_outside_at,
            GREATEST(i.total_minor - i.psa_balance_minor - f.reduced, 0) AS outside,
            CASE WHEN f.voided_at IS NOT NULL OR i.psa_status = 'written_off' THEN 0
                 ELSE GREATEST(LEAST(i.psa_balance_minor, i.total_minor - f.reduced), 0) END AS balance
        FROM facts f JOIN invoices i USING (tenant_id, invoice_id)
    ) o
), failures AS (
    SELECT b.invoice_id, count(pf.*) AS attempts, (array_agg(pf.next_attempt_at ORDER BY pf.occurred_at DESC)
        FILTER (WHERE pf.retryable))[1] AS next_retry_at
    FROM balances b JOIN payment_failures pf ON pf.tenant_id = b.tenant_id AND pf.client_id = b.client_id
        AND pf.invoice_ids ? b.invoice_id AND pf.occurred_at > COALESCE(b.last_payment_at, '-infinity')
    GROUP BY b.invoice_id
)
UPDATE invoices i SET
    voided_at = b.voided_at,
    reduced_minor = b.reduced,
    outside_paid_at = b.outside_at,
    outside_paid_minor = b.outside,
    balance_minor = b.balance,
    status = CASE WHEN b.voided_at IS NOT NULL THEN 'void'
                  WHEN b.psa_status = 'written_off' THEN 'written_off'
                  WHEN b.balance = 0 THEN 'paid'
                  WHEN b.balance < b.total_minor THEN 'partially_paid'
                  ELSE 'open' END,
    paid_at = CASE WHEN b.balance = 0 AND b.voided_at IS NULL AND b.psa_status <> 'written_off'
                   THEN GREATEST(b.last_reduced_at, b.outside_at) END,
    last_payment_at = b.last_payment_at,
    failed_attempts = COALESCE(f.attempts, 0),
    next_retry_at = CASE WHEN b.balance > 0 THEN f.next_retry_at END,
    disputed = COALESCE(b.disputed, false),
    last_reminder_step = (b.reminder->>'step')::int,
    last_reminder_level = b.reminder->>'level',
    last_reminder_at = b.reminder_at,
    promised_on = b.promised_on
FROM balances b LEFT JOIN failures f ON f.invoice_id = b.invoice_id
WHERE i.tenant_id = b.tenant_id AND i.invoice_id = b.invoice_id
""")


async def refresh_invoices(session: AsyncSession, tenant_id: str, invoice_ids: Sequence[str]) -> None:
    """Recompute the derived columns of these invoices from every fact stored about them."""
    if invoice_ids:
        await session.execute(_REFRESH, {"t": tenant_id, "ids": list(dict.fromkeys(invoice_ids))})


async def store_payout(session: AsyncSession, tenant_id: str, data: dict[str, Any], occurred_at: datetime) -> None:
    await session.execute(text("""
        INSERT INTO payouts (tenant_id, payout_id, arrival_date, amount_minor, currency, items, occurred_at)
        VALUES (:t, :id, :arrival, :amount, :currency, CAST(:items AS jsonb), :at)
        ON CONFLICT (tenant_id, payout_id) DO UPDATE SET arrival_date = EXCLUDED.arrival_date,
            amount_minor = EXCLUDED.amount_minor, items = EXCLUDED.items, occurred_at = EXCLUDED.occurred_at
        WHERE payouts.occurred_at <= EXCLUDED.occurred_at"""),
        {"t": tenant_id, "id": data["payout_id"], "arrival": _date(data["arrival_date"]),
         "amount": data["amount_minor"], "currency": data["currency"], "items": _json(data["items"]),
         "at": occurred_at})


async def record_gl_posting(session: AsyncSession, tenant_id: str, data: dict[str, Any], occurred_at: datetime) -> None:
    await session.execute(text("""
        INSERT INTO gl_postings (tenant_id, entry_id, system, purpose, external_id, posted_at)
        VALUES (:t, :entry, :system, :purpose, :external, :at) ON CONFLICT DO NOTHING"""),
        {"t": tenant_id, "entry": data["entry_id"], "system": data["system"], "purpose": data["purpose"],
         "external": data["external_id"], "at": occurred_at})


async def open_exception(session: AsyncSession, tenant_id: str, exception_id: str, *, kind: str,
                         client_id: str | None, subject_id: str, title: str, detail: str, action: str,
                         action_href: str | None, occurred_at: datetime, retryable: bool = False,
                         next_attempt_at: datetime | None = None) -> None:
    """Open (or reopen with newer details) one exception; an older report never overwrites a newer one."""
    await session.execute(text("""
        INSERT INTO exceptions (tenant_id, exception_id, kind, client_id, subject_id, title, detail, action,
                                action_href, retryable, next_attempt_at, occurred_at)
        VALUES (:t, :id, :kind, :c, :subject, :title, :detail, :action, :href, :retryable, :next, :at)
        ON CONFLICT (tenant_id, exception_id) DO UPDATE SET title = EXCLUDED.title, detail = EXCLUDED.detail,
            action = EXCLUDED.action, action_href = EXCLUDED.action_href, retryable = EXCLUDED.retryable,
            next_attempt_at = EXCLUDED.next_attempt_at, occurred_at = EXCLUDED.occurred_at,
            client_id = COALESCE(EXCLUDED.client_id, exceptions.client_id),
            resolved_at = CASE WHEN exceptions.resolved_at > EXCLUDED.occurred_at THEN exceptions.resolved_at END
        WHERE exceptions.occurred_at <= EXCLUDED.occurred_at"""),
        {"t": tenant_id, "id": exception_id, "kind": kind, "c": client_id, "subject": subject_id, "title": title,
         "detail": detail, "action": action, "href": action_href, "retryable": retryable,
         "next": next_attempt_at, "at": occurred_at})


async def resolve_exception(session: AsyncSession, tenant_id: str, exception_id: str, resolved_at: datetime) -> None:
    await resolve_exceptions(session, [(tenant_id, exception_id, resolved_at)])


async def resolve_exceptions(session: AsyncSession, resolutions: Sequence[tuple[str, str, datetime]]) -> None:
    """(tenant, exception, resolved at) each, applied in order: resolve an exception reported before
    that time (a newer report stays open)."""
    if resolutions:
        await session.execute(text("""
            UPDATE exceptions SET resolved_at = :at
            WHERE tenant_id = :t AND exception_id = :id AND occurred_at <= :at
              AND (resolved_at IS NULL OR resolved_at < :at)"""),
            [{"t": tenant_id, "id": exception_id, "at": resolved_at}
             for tenant_id, exception_id, resolved_at in resolutions])


async def resolve_exceptions_of_kind(session: AsyncSession, tenant_id: str, kind: str, subject_id: str,
                                     resolved_at: datetime) -> None:
    await resolve_exceptions_of_kind_many(session, kind, [(tenant_id, subject_id, resolved_at)])


async def resolve_exceptions_of_kind_many(session: AsyncSession, kind: str,
                                          resolutions: Sequence[tuple[str, str, datetime]]) -> None:
    """(tenant, subject, resolved at) each, applied in order."""
    if resolutions:
        await session.execute(text("""
            UPDATE exceptions SET resolved_at = :at
            WHERE tenant_id = :t AND kind = :kind AND subject_id = :subject AND occurred_at <= :at
              AND resolved_at IS NULL"""),
            [{"t": tenant_id, "kind": kind, "subject": subject_id, "at": resolved_at}
             for tenant_id, subject_id, resolved_at in resolutions])


async def payment_settled_at(session: AsyncSession, tenant_id: str, payment_id: str) -> datetime | None:
    return await session.scalar(text(
        "SELECT settled_at FROM payments WHERE tenant_id = :t AND payment_id = :p"),
        {"t": tenant_id, "p": payment_id})


async def drop_exception(session: AsyncSession, tenant_id: str, exception_id: str) -> None:
    """For exceptions that are a present condition, not a past event: gone when the condition is."""
    await session.execute(text("DELETE FROM exceptions WHERE tenant_id = :t AND exception_id = :id"),
                          {"t": tenant_id, "id": exception_id})


async def payout_occurred_at(session: AsyncSession, tenant_id: str, payout_id: str) -> datetime:
    return await session.scalar(text(
        "SELECT occurred_at FROM payouts WHERE tenant_id = :t AND payout_id = :id"), {"t": tenant_id, "id": payout_id})


async def gl_posted_at(session: AsyncSession, tenant_id: str, entry_id: str) -> datetime | None:
    return await session.scalar(text("SELECT posted_at FROM gl_postings WHERE tenant_id = :t AND entry_id = :e"),
                                {"t": tenant_id, "e": entry_id})


async def unmatched_payout_items(session: AsyncSession, tenant_id: str, payout_id: str) -> list[str]:
    """Payment ids of a payout's charges that we hold no settled payment for."""
    rows = await session.execute(text("""
        SELECT item->>'payment_id' FROM payouts p, jsonb_array_elements(p.items) item
        WHERE p.tenant_id = :t AND p.payout_id = :id AND item->>'type' = 'charge'
          AND NOT EXISTS (SELECT 1 FROM payments m WHERE m.tenant_id = p.tenant_id
                AND m.payment_id = item->>'payment_id'
                AND m.status IN ('succeeded', 'partially_refunded', 'refunded', 'disputed'))
        ORDER BY 1"""), {"t": tenant_id, "id": payout_id})
    return [row[0] for row in rows if row[0]]


async def payouts_with_payments(session: AsyncSession,
                                keys: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(tenant, payout) of the payouts that list any of these (tenant, payment id): a lookup in the
    index of payout items (migration 0006) per payment, whatever the tenant's payout history."""
    if not keys:
        return []
    tenants, payments = zip(*dict.fromkeys(keys))
    rows = await session.execute(text("""
        SELECT DISTINCT p.tenant_id, p.payout_id
        FROM unnest(CAST(:tenants AS text[]), CAST(:payments AS text[])) AS wanted(tenant_id, payment_id)
        JOIN payouts p ON p.tenant_id = wanted.tenant_id
         AND p.items @> jsonb_build_array(jsonb_build_object('payment_id', wanted.payment_id))
        ORDER BY 1, 2"""), {"tenants": list(tenants), "payments": list(payments)})
    return [(row[0], row[1]) for row in rows]
