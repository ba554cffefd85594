"""What the payments service keeps from other services' events: clients, invoices, credit memos.

Each handler runs in the consumer's transaction with the event's inbox claim, so a redelivered
event has no second effect. Events of one client arrive in order within a topic but not across
topics, so every upsert is keyed by the event's `occurred_at` (newest wins) and tolerates a
client or invoice it has not seen yet.
"""
from __future__ import annotations

from sqlalchemy import func, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import tenant_replica
from payloop.consumer import newest_per_key
from payloop.events.catalogue import ClientUpsertedV1, CreditMemoCreatedV1, InvoiceV1, InvoiceVoidedV1
from payloop.events.envelope import Envelope

from payloop_payments.models import Client, CreditMemo, CreditMemoApplication, Invoice


async def client_upserted(session: AsyncSession, event: Envelope, data: ClientUpsertedV1) -> None:
    stmt = insert(Client).values(tenant_id=event.tenant_id, client_id=data.client_id, name=data.name,
                                 billing_emails=data.billing_emails)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[Client.tenant_id, Client.client_id],
        set_={"name": stmt.excluded.name, "billing_emails": stmt.excluded.billing_emails, "updated_at": func.now()},
    ))


async def invoice_upserted(session: AsyncSession, event: Envelope, data: InvoiceV1) -> None:
    await invoices_upserted(session, [(event, data)])


async def invoices_upserted(session: AsyncSession, run: list[tuple[Envelope, InvoiceV1]]) -> None:
    """invoice.created and invoice.updated: the PSA's view; our collected/pending amounts stay."""
    run = newest_per_key(run, lambda event, data: (event.tenant_id, data.invoice_id))
    early_credit = await _credit_applied_before(session, [(event.tenant_id, data.invoice_id) for event, data in run])
    rows = [{
        "tenant_id": event.tenant_id, "invoice_id": data.invoice_id, "client_id": event.client_id or "",
        "number": data.number, "currency": data.currency, "issued_on": data.issued_on, "due_on": data.due_on,
        "status": data.status, "total_minor": data.total_minor,
        "psa_balance_minor": 0 if data.status in ("void", "written_off") else data.balance_minor,
        "line_kinds": sorted({line.kind for line in data.lines}),
        "lines": [line.model_dump(mode="json") for line in data.lines],
        "agreement": data.agreement.model_dump(mode="json") if data.agreement else None,
        "source_occurred_at": event.occurred_at,
        "credited_minor": early_credit.get((event.tenant_id, data.invoice_id), 0),
    } for event, data in run]
    # One statement executed for many rows: compiled once, sent in one round trip.
    stmt = insert(Invoice.__table__)
    # credited_minor is set on insert only: afterwards credit_memo_created keeps it.
    updatable = {k: stmt.excluded[k] for k in rows[0] if k not in ("tenant_id", "invoice_id", "credited_minor")}
    await session.execute(stmt.on_conflict_do_update(
        index_elements=[Invoice.tenant_id, Invoice.invoice_id],
        set_={**updatable, "updated_at": func.now()},
        where=Invoice.source_occurred_at <= stmt.excluded.source_occurred_at,
    ), rows)


async def _credit_applied_before(session: AsyncSession, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """A new invoice starts with the credit memos that arrived before it (see credit_memo_created)."""
    rows = await session.execute(
        select(CreditMemoApplication.tenant_id, CreditMemoApplication.invoice_id,
               func.sum(CreditMemoApplication.amount_minor))
        .where(tuple_(CreditMemoApplication.tenant_id, CreditMemoApplication.invoice_id).in_(keys))
        .group_by(CreditMemoApplication.tenant_id, CreditMemoApplication.invoice_id))
    return {(tenant_id, invoice_id): int(amount) for tenant_id, invoice_id, amount in rows}


async def invoice_voided(session: AsyncSession, event: Envelope, data: InvoiceVoidedV1) -> None:
    invoice = await session.get(Invoice, (event.tenant_id, data.invoice_id), with_for_update=True)
    if invoice is None:
        return  # never seen: nothing to collect, and a later invoice.created carries status void
    invoice.status, invoice.psa_balance_minor = "void", 0
    invoice.source_occurred_at = max(invoice.source_occurred_at, event.occurred_at)


async def credit_memo_created(session: AsyncSession, event: Envelope, data: CreditMemoCreatedV1) -> None:
    """Applied parts reduce those invoices; the unapplied rest is client credit for the next charge."""
    inserted = await session.execute(insert(CreditMemo).values(
        tenant_id=event.tenant_id, credit_memo_id=data.credit_memo_id, client_id=event.client_id or "",
        total_minor=data.total_minor, currency=data.currency,
    ).on_conflict_do_nothing().returning(CreditMemo.credit_memo_id))
    if inserted.scalar() is None:
        return
    applied = 0
    for part in data.applied_to:
        session.add(CreditMemoApplication(tenant_id=event.tenant_id, credit_memo_id=data.credit_memo_id,
                                          invoice_id=part.invoice_id, amount_minor=part.amount_minor))
        invoice = await session.get(Invoice, (event.tenant_id, part.invoice_id), with_for_update=True)
        if invoice is not None:
            invoice.credited_minor += part.amount_minor
        applied += part.amount_minor
    rest = data.total_minor - applied
    if rest > 0 and event.client_id:
        stmt = insert(Client).values(tenant_id=event.tenant_id, client_id=event.client_id, name="",
                                     credit_minor=rest)
        await session.execute(stmt.on_conflict_do_update(
            index_elements=[Client.tenant_id, Client.client_id],
            set_={"credit_minor": Client.credit_minor + rest},
        ))


BATCH_HANDLERS = {"invoice.created": invoices_upserted, "invoice.updated": invoices_upserted}

HANDLERS = {
    "tenant.updated": tenant_replica.apply_tenant_updated,
    "client.upserted": client_upserted,
    "invoice.created": invoice_upserted,
    "invoice.updated": invoice_upserted,
    "invoice.voided": invoice_voided,
    "credit_memo.created": credit_memo_created,
}


