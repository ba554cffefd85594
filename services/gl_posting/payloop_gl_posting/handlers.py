"""Event handlers: each event becomes a balanced journal entry waiting to be posted.

Handlers only write our own database (in the consumer's transaction, with its inbox claim); the
posting worker talks to the accounting system afterwards. So a redelivered event changes nothing
(the entry key (event id, purpose) already exists) and a slow vendor never holds up the consumer.
"""
from __future__ import annotations

from datetime import date

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import tenant_replica
from payloop.consumer import newest_per_key
from payloop.events.catalogue import (
    EventData, InvoiceV1, InvoiceVoidedV1, PaymentDisputedV1, PaymentRefundedV1, PaymentSettledV1, PayoutPaidV1,
)
from payloop.events.envelope import Envelope
from payloop_gl_posting import journal, repository
from payloop_gl_posting.models import Invoice


async def on_invoice(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await on_invoices(session, [(event, data)])


async def on_invoices(session: AsyncSession, run: list[tuple[Envelope, EventData]]) -> None:
    """invoice.created and invoice.updated: the newest snapshot of each invoice wins."""
    rows = []
    for event, data in newest_per_key(run, lambda event, data: (event.tenant_id, data.invoice_id)):
        assert isinstance(data, InvoiceV1)
        rows.append(dict(tenant_id=event.tenant_id, invoice_id=data.invoice_id, number=data.number,
                         client_id=event.client_id, currency=data.currency, total_minor=data.total_minor,
                         balance_minor=data.balance_minor, status=data.status, occurred_at=event.occurred_at))
    # One statement executed for many rows: compiled once, sent in one round trip.
    stmt = insert(Invoice.__table__)
    await session.execute(stmt.on_conflict_do_update(
        index_elements=["tenant_id", "invoice_id"],
        set_={k: stmt.excluded[k] for k in rows[0] if k not in ("tenant_id", "invoice_id")},
        where=Invoice.occurred_at <= stmt.excluded.occurred_at), rows)


async def on_invoice_voided(session: AsyncSession, event: Envelope, data: EventData) -> None:
    assert isinstance(data, InvoiceVoidedV1)
    existing = await session.get(Invoice, (event.tenant_id, data.invoice_id))
    if existing is not None:
        existing.status = "void"


def _day(event: Envelope, settled_at=None) -> date:
    return (settled_at or event.occurred_at).date()


async def on_payment_settled(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await on_payments_settled(session, [(event, data)])


async def on_payments_settled(session: AsyncSession, run: list[tuple[Envelope, EventData]]) -> None:
    """Each payment, and its card convenience fee (charged on top, the MSP's income) as an entry of its own."""
    entries = []
    for event, data in run:
        assert isinstance(data, PaymentSettledV1)
        common = dict(tenant_id=event.tenant_id, source_event_id=event.id, payment_id=data.payment_id,
                      currency=data.currency, occurred_on=_day(event, data.settled_at), client_id=event.client_id)
        entries.append(journal.payment_settled(
            amount_minor=data.amount_minor, allocations=[a.model_dump(mode="json") for a in data.allocations],
            **common))
        if data.surcharge_minor:
            entries.append(journal.convenience_fee(surcharge_minor=data.surcharge_minor, **common))
    await repository.add_entries(session, entries)


async def on_payment_refunded(session: AsyncSession, event: Envelope, data: EventData) -> None:
    assert isinstance(data, PaymentRefundedV1)
    if await repository.entry_exists(session, event.tenant_id, "refund", data.refund_id):
        return  # the same refund told again under a new event id
    await repository.add_entry(session, journal.payment_reversed(
        "refund", tenant_id=event.tenant_id, source_event_id=event.id, payment_id=data.payment_id,
        reversal_id=data.refund_id, amount_minor=data.refunded_minor, currency=data.currency,
        occurred_on=_day(event), client_id=event.client_id))


async def on_payment_disputed(session: AsyncSession, event: Envelope, data: EventData) -> None:
    """The funds leave when the dispute opens and come back if it is won; each move is journaled once per
    dispute, whichever of its events (created, funds_withdrawn, closed) tells it first or again. The
    processor withdraws the whole charge: with the payment, its convenience fee's share."""
    assert isinstance(data, PaymentDisputedV1)
    if data.status.startswith("warning_"):
        return  # an inquiry: the processor withdraws nothing unless it becomes a chargeback
    common = dict(tenant_id=event.tenant_id, source_event_id=event.id, payment_id=data.payment_id,
                  currency=data.currency, occurred_on=_day(event), client_id=event.client_id)
    taken = await repository.reversal(session, event.tenant_id, "dispute", data.dispute_id)
    if taken is None:
        # A dispute first heard of as won was still withdrawn before it was returned.
        withdrawn = journal.payment_reversed("dispute", reversal_id=data.dispute_id, amount_minor=data.disputed_minor,
                                             surcharge_minor=data.disputed_surcharge_minor, **common)
        await repository.add_entry(session, withdrawn)
        taken = withdrawn.details
    if data.status == "won" and not await repository.entry_exists(session, event.tenant_id, "dispute_won",
                                                                  data.dispute_id):
        # What comes back is what the journal took out, line for line (an entry journaled before disputes
        # told the fee's share has none).
        await repository.add_entry(session, journal.dispute_won(
            dispute_id=data.dispute_id, amount_minor=taken["amount_minor"],
            surcharge_minor=taken.get("surcharge_minor", 0), **common))


async def on_payout_paid(session: AsyncSession, event: Envelope, data: EventData) -> None:
    assert isinstance(data, PayoutPaidV1)
    await repository.add_entry(session, journal.payout_paid(
        tenant_id=event.tenant_id, source_event_id=event.id, payout_id=data.payout_id,
        amount_minor=data.amount_minor, currency=data.currency,
        items=[i.model_dump(mode="json") for i in data.items], arrival_date=data.arrival_date))


BATCH_HANDLERS = {"invoice.created": on_invoices, "invoice.updated": on_invoices,
                  "payment.settled": on_payments_settled}

HANDLERS = {
    "tenant.updated": tenant_replica.apply_tenant_updated,
    "invoice.created": on_invoice,
    "invoice.updated": on_invoice,
    "invoice.voided": on_invoice_voided,
    "payment.settled": on_payment_settled,
    "payment.refunded": on_payment_refunded,
    "payment.disputed": on_payment_disputed,
    "payout.paid": on_payout_paid,
}
