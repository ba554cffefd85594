"""Event handlers: every domain topic, translated into read-model writes (`read_models`).

The consumer runtime runs each handler inside the partition batch's transaction with an inbox
claim, so a redelivered event is skipped; the writes themselves are order-independent upserts, so
events of different topics may arrive in any order and give the same read model.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from payloop import tenant_replica
from payloop.consumer import BatchHandler, Handler
from payloop.events.catalogue import EventData
from payloop.events.envelope import Envelope

from payloop_reporting import read_models as rm


def _client(event: Envelope) -> str:
    if not event.client_id:
        raise ValueError(f"{event.type} {event.id} names no client_id; the read model cannot place it")
    return event.client_id


async def _refresh_per_tenant(session: AsyncSession, keys: list[tuple[str, str]]) -> None:
    """One refresh of the derived invoice columns per tenant, for all of a run's (tenant, invoice)."""
    by_tenant: dict[str, list[str]] = {}
    for tenant_id, invoice_id in keys:
        by_tenant.setdefault(tenant_id, []).append(invoice_id)
    for tenant_id, invoice_ids in by_tenant.items():
        await rm.refresh_invoices(session, tenant_id, invoice_ids)


async def _timeline(session: AsyncSession, event: Envelope, kind: str, summary: str, **extra) -> None:
    await rm.add_timeline(session, event.tenant_id, event.client_id, event_id=event.id, kind=kind,
                          summary=summary, occurred_at=event.occurred_at, **extra)


# --- psa_ingest ---------------------------------------------------------------------------------

async def on_client_upserted(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.upsert_client_profile(session, event.tenant_id, data.client_id, name=data.name,
                                   psa_source=data.psa.source, terms=data.terms,
                                   billing_emails=data.billing_emails, occurred_at=event.occurred_at)
    await rm.resolve_exceptions_of_kind(session, event.tenant_id, "psa_sync_failed", data.psa.source,
                                        event.occurred_at)


async def on_agreement_upserted(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.ensure_client(session, event.tenant_id, data.client_id)
    await rm.upsert_agreement(session, event.tenant_id, data.model_dump(mode="json"), event.occurred_at)


async def on_invoice(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await on_invoices(session, [(event, data)])


async def on_invoices(session: AsyncSession, run: list[tuple[Envelope, EventData]]) -> None:
    """invoice.created and invoice.updated: the PSA's view of the invoice, newest snapshot wins."""
    snapshots = [(event.tenant_id, _client(event), data.model_dump(mode="json"), event.occurred_at)
                 for event, data in run]
    await rm.ensure_clients(session, [(tenant_id, client_id) for tenant_id, client_id, _, _ in snapshots])
    await rm.upsert_invoices(session, snapshots)
    await _refresh_per_tenant(session, [(event.tenant_id, data.invoice_id) for event, data in run])
    await rm.resolve_exceptions_of_kind_many(session, "psa_sync_failed", [
        (event.tenant_id, data.psa.source, event.occurred_at) for event, data in run])
    await rm.add_timelines(session, [
        rm.timeline_row(event.tenant_id, event.client_id, event_id=event.id, kind="invoice_created",
                        summary=f"Invoice {data.number} issued, due {data.due_on}", occurred_at=event.occurred_at,
                        amount_minor=data.total_minor, currency=data.currency, invoice_ids=[data.invoice_id])
        for event, data in run if event.type == "invoice.created"])


async def on_invoice_voided(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.record_void(session, event.tenant_id, data.invoice_id, data.voided_at or event.occurred_at)
    await rm.refresh_invoices(session, event.tenant_id, [data.invoice_id])
    await _timeline(session, event, "invoice_voided", f"Invoice {data.number} voided", invoice_ids=[data.invoice_id])


async def on_credit_memo_created(session: AsyncSession, event: Envelope, data: EventData) -> None:
    applied = [(a.invoice_id, a.amount_minor) for a in data.applied_to]
    await rm.ensure_client(session, event.tenant_id, event.client_id)
    await rm.record_reductions(session, event.tenant_id, "credit_memo", data.credit_memo_id, applied,
                               event.occurred_at, reduced_on=data.issued_on)
    await rm.refresh_invoices(session, event.tenant_id, [invoice_id for invoice_id, _ in applied])
    await _timeline(session, event, "credit_memo", f"Credit memo {data.number}", amount_minor=data.total_minor,
                    currency=data.currency, invoice_ids=[i for i, _ in applied])


async def on_ticket_flagged(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.ensure_client(session, event.tenant_id, event.client_id)
    await rm.upsert_ticket(session, event.tenant_id, event.client_id, data.model_dump(mode="json"), event.occurred_at)
    await rm.refresh_invoices(session, event.tenant_id, data.invoice_ids)
    state = "opened" if data.open else "closed"
    await _timeline(session, event, "dispute_ticket", f"Billing dispute ticket {data.ticket_id} {state}",
                    invoice_ids=data.invoice_ids, data={"summary": data.summary, "open": data.open})


async def on_psa_payment_recorded(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await _timeline(session, event, "psa_payment_recorded", f"Payment written back to {data.psa.source}",
                    amount_minor=data.amount_minor, currency=data.currency, invoice_ids=[data.invoice_id])


async def on_psa_sync_failed(session: AsyncSession, event: Envelope, data: EventData) -> None:
    action = ("The sync retries by itself; if this stays open, check the PSA's status and rate limits."
              if data.retryable else
              "Fix the PSA connection (credentials, API member permissions), then run `payloop sync`.")
    await rm.open_exception(session, event.tenant_id, f"psa_sync_failed:{data.connection_id}",
                            kind="psa_sync_failed", client_id=None, subject_id=data.source,
                            title=f"{data.source} sync failed", detail=data.error, action=action,
                            action_href=None, occurred_at=event.occurred_at, retryable=data.retryable)


# --- payments -----------------------------------------------------------------------------------

async def on_payment_method_updated(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.ensure_client(session, event.tenant_id, event.client_id)
    await _timeline(session, event, "payment_method", f"Payment method {_method(data)} is {data.status}",
                    data={"reason": data.reason})


async def on_autopay_changed(session: AsyncSession, event: Envelope, data: EventData) -> None:
    client_id = _client(event)
    await rm.ensure_client(session, event.tenant_id, client_id)
    await rm.record_autopay(session, event.tenant_id, client_id, event_id=event.id, enrolled=data.enrolled,
                            method_id=data.payment_method_id, occurred_at=event.occurred_at)
    await _timeline(session, event, "autopay", "Auto-pay enrolled" if data.enrolled else "Auto-pay turned off",
                    data={"reason": data.reason})


def _allocations(data: EventData) -> list[tuple[str, int]]:
    return [(a.invoice_id, a.amount_minor) for a in data.allocations]


def _given_back(data: EventData, amount_minor: int) -> list[tuple[str, int]]:
    """What a refund, dispute or return takes back, as negative reductions."""
    return [(invoice_id, -part) for invoice_id, part in data.taken_back(amount_minor)]


def _method(data: EventData) -> str:
    return " ".join(p for p in (data.method.type, data.method.brand, data.method.last4) if p)


async def on_payment(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await on_payments(session, [(event, data)])


def _settled_at(event: Envelope, data: EventData) -> datetime | None:
    """When a payment.settled says the money moved; None for a payment.initiated."""
    return (data.settled_at or event.occurred_at) if event.type == "payment.settled" else None


async def on_payments(session: AsyncSession, run: list[tuple[Envelope, EventData]]) -> None:
    """payment.initiated and payment.settled, the auto-pay stream: one statement per run (the invoice
    refresh one per tenant) instead of about ten per event. Writes that a later event of the run may
    overwrite (a payment's status, a settlement told twice) are one statement per row, pipelined, in
    the run's order. The reads come after all of them, which equals reading after each event: of
    what these events write, the refresh reads only the reductions; and in such a run a payment only
    moves towards settled, so a payout checked once sees the charges its last check would have seen."""
    facts = [(event, data, _settled_at(event, data)) for event, data in run]
    settled = [(event, data, settled_at) for event, data, settled_at in facts if settled_at is not None]
    await rm.ensure_clients(session, [(event.tenant_id, event.client_id) for event, _ in run])
    await rm.upsert_payments(session, [
        rm.payment_row(event.tenant_id, event.client_id, data.model_dump(mode="json"),
                       status="processing" if settled_at is None else "succeeded",
                       occurred_at=event.occurred_at, settled_at=settled_at)
        for event, data, settled_at in facts])
    await rm.add_reductions(session, [
        row for event, data, settled_at in settled
        for row in rm.reduction_rows(event.tenant_id, "payment", data.settlement_id(), _allocations(data),
                                     settled_at)])
    await _refresh_per_tenant(session, [(event.tenant_id, invoice_id) for event, data, _ in settled
                                        for invoice_id, _ in _allocations(data)])
    await rm.resolve_exceptions(session, [(event.tenant_id, f"payment_failed:{data.payment_id}", settled_at)
                                          for event, data, settled_at in settled])
    for tenant_id, payout_id in await rm.payouts_with_payments(
            session, [(event.tenant_id, data.payment_id) for event, data, _ in settled]):
        await _check_payout(session, tenant_id, payout_id)
    await rm.add_timelines(session, [_payment_timeline(event, data, settled_at)
                                     for event, data, settled_at in facts])


def _payment_timeline(event: Envelope, data: EventData, settled_at: datetime | None) -> dict:
    if settled_at is None:
        kind, summary = "payment_initiated", f"Payment started ({data.origin}, {_method(data)})"
    else:
        kind, summary = "payment_settled", f"Payment settled ({_method(data)})"
    return rm.timeline_row(event.tenant_id, event.client_id, event_id=event.id, kind=kind, summary=summary,
                           occurred_at=event.occurred_at, amount_minor=data.amount_minor,
                           currency=data.currency, invoice_ids=[i for i, _ in _allocations(data)])


async def on_payment_failed(session: AsyncSession, event: Envelope, data: EventData) -> None:
    values = data.model_dump(mode="json")
    await rm.ensure_client(session, event.tenant_id, event.client_id)
    await rm.upsert_payment(session, event.tenant_id, event.client_id, values, status="failed",
                            occurred_at=event.occurred_at)
    await rm.record_payment_failure(session, event.tenant_id, event.client_id, event_id=event.id, data=values,
                                    occurred_at=event.occurred_at)
    invoice_ids = [i for i, _ in _allocations(data)]
    await rm.refresh_invoices(session, event.tenant_id, invoice_ids)
    retry = (f"next retry at {data.next_attempt_at.isoformat()}" if data.retryable and data.next_attempt_at
             else "no retry scheduled")
    await _timeline(session, event, "payment_failed", f"Payment failed: {data.decline_code or 'declined'}; {retry}",
                    amount_minor=data.amount_minor, currency=data.currency, invoice_ids=invoice_ids)
    action = ("Nothing to do before the next retry; if it fails again, ask the client to update the payment method."
              if data.retryable and data.next_attempt_at else
              "Ask the client to update the payment method (the checkout link in the last reminder works), "
              "then charge again.")
    await rm.open_exception(
        session, event.tenant_id, f"payment_failed:{data.payment_id}", kind="payment_failed",
        client_id=event.client_id, subject_id=data.payment_id,
        title=f"Payment failed ({data.decline_code or 'declined'})",
        detail=f"Attempt {data.attempt} with {_method(data)} for {len(invoice_ids)} invoice(s); {retry}.",
        action=action, action_href=f"/v1/clients/{event.client_id}" if event.client_id else None,
        occurred_at=event.occurred_at, retryable=data.retryable, next_attempt_at=data.next_attempt_at)
    settled_at = await rm.payment_settled_at(session, event.tenant_id, data.payment_id)
    if settled_at is not None:  # a later attempt settled before this failure reached us
        await rm.resolve_exception(session, event.tenant_id, f"payment_failed:{data.payment_id}", settled_at)


async def on_payment_refunded(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.ensure_client(session, event.tenant_id, event.client_id)
    await rm.upsert_payment(session, event.tenant_id, event.client_id, data.model_dump(mode="json"),
                            status="succeeded", occurred_at=event.occurred_at)
    await rm.record_refund(session, event.tenant_id, data.payment_id, data.refund_id, data.refunded_minor)
    refunded = _given_back(data, data.refunded_minor)
    await rm.record_reductions(session, event.tenant_id, "refund", data.refund_id, refunded, event.occurred_at)
    await rm.refresh_invoices(session, event.tenant_id, [i for i, _ in refunded])
    await _timeline(session, event, "payment_refunded", f"Refund {data.refund_id}", amount_minor=data.refunded_minor,
                    currency=data.currency, invoice_ids=[i for i, _ in refunded], data={"reason": data.reason})


async def on_payment_disputed(session: AsyncSession, event: Envelope, data: EventData) -> None:
    """Funds withdrawn (a chargeback, a returned ACH debit) are owed again; a won dispute brings them back.
    Both are reductions keyed by the dispute, so any order and any repetition of its events agree."""
    await rm.ensure_client(session, event.tenant_id, event.client_id)
    await rm.upsert_payment(session, event.tenant_id, event.client_id, data.model_dump(mode="json"),
                            status="disputed", occurred_at=event.occurred_at)
    if not data.status.startswith("warning_"):  # an inquiry withdraws nothing
        withdrawn = _given_back(data, data.disputed_minor)
        await rm.record_reductions(session, event.tenant_id, "dispute", data.dispute_id, withdrawn, event.occurred_at)
        if data.status == "won":
            await rm.record_reductions(session, event.tenant_id, "dispute_won", data.dispute_id,
                                       [(invoice_id, -part) for invoice_id, part in withdrawn], event.occurred_at)
        await rm.refresh_invoices(session, event.tenant_id, [i for i, _ in withdrawn])
    await rm.open_exception(
        session, event.tenant_id, f"payment_disputed:{data.dispute_id}", kind="payment_disputed",
        client_id=event.client_id, subject_id=data.payment_id,
        title=f"Payment disputed ({data.reason or data.status})",
        detail=f"{_method(data)} payment {data.payment_id} is disputed; status {data.status}.",
        action="Answer the dispute with evidence (invoice, agreement, delivery) in the Stripe dashboard before its deadline.",
        action_href=f"https://dashboard.stripe.com/disputes/{data.dispute_id}", occurred_at=event.occurred_at)
    await _timeline(session, event, "payment_disputed", f"Payment disputed ({data.reason or data.status})",
                    amount_minor=data.disputed_minor, currency=data.currency,
                    invoice_ids=[i for i, _ in _allocations(data)])


async def on_installment_plan_created(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.ensure_client(session, event.tenant_id, event.client_id)
    await _timeline(session, event, "installment_plan", f"Installment plan in {len(data.parts)} parts",
                    amount_minor=sum(p.amount_minor for p in data.parts), currency=data.currency,
                    invoice_ids=[data.invoice_id])


async def _check_payout(session: AsyncSession, tenant_id: str, payout_id: str) -> None:
    """Open an exception while a payout holds charges we know no settled payment for."""
    unmatched = await rm.unmatched_payout_items(session, tenant_id, payout_id)
    exception_id = f"unmatched_payout:{payout_id}"
    if not unmatched:
        await rm.drop_exception(session, tenant_id, exception_id)
        return
    at = await rm.payout_occurred_at(session, tenant_id, payout_id)
    await rm.open_exception(
        session, tenant_id, exception_id, kind="unmatched_payout", client_id=None, subject_id=payout_id,
        title=f"Payout {payout_id} has {len(unmatched)} unmatched charge(s)",
        detail="No settled payment is known for: " + ", ".join(unmatched),
        action="Check these charges in the payments service and Stripe; the exception closes when their "
               "payment.settled arrives.", action_href=None, occurred_at=at)


async def on_payout_paid(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.store_payout(session, event.tenant_id, data.model_dump(mode="json"), event.occurred_at)
    await _check_payout(session, event.tenant_id, data.payout_id)


# --- collections --------------------------------------------------------------------------------

async def on_reminder_sent(session: AsyncSession, event: Envelope, data: EventData) -> None:
    client_id = _client(event)
    await rm.ensure_client(session, event.tenant_id, client_id)
    await _timeline(session, event, "reminder", f"{data.level.title()} reminder by {data.channel} (step {data.step:+d})",
                    invoice_ids=data.invoice_ids, data={"step": data.step, "level": data.level,
                                                        "template": data.template})
    await rm.set_collection_state(session, event.tenant_id, client_id, state="active", level=data.level,
                                  step=data.step, occurred_at=event.occurred_at)
    await rm.refresh_invoices(session, event.tenant_id, data.invoice_ids)


async def on_collection_escalated(session: AsyncSession, event: Envelope, data: EventData) -> None:
    client_id = _client(event)
    await rm.ensure_client(session, event.tenant_id, client_id)
    await rm.set_collection_state(session, event.tenant_id, client_id, state="escalated", level=data.level,
                                  case_id=data.case_id, occurred_at=event.occurred_at)
    await _timeline(session, event, "escalated", f"Escalated to {data.level}", invoice_ids=data.invoice_ids,
                    data={"case_id": data.case_id, "task_id": data.task_id})


async def on_collection_paused(session: AsyncSession, event: Envelope, data: EventData) -> None:
    client_id = _client(event)
    await rm.ensure_client(session, event.tenant_id, client_id)
    await rm.set_collection_state(session, event.tenant_id, client_id, state="paused", case_id=data.case_id,
                                  paused_reason=data.reason, paused_until=data.until, occurred_at=event.occurred_at)
    until = f" until {data.until}" if data.until else ""
    await _timeline(session, event, "paused", f"Collection paused ({data.reason}){until}")


async def on_promise_recorded(session: AsyncSession, event: Envelope, data: EventData) -> None:
    client_id = _client(event)
    await rm.ensure_client(session, event.tenant_id, client_id)
    await _timeline(session, event, "promise", f"Promise to pay by {data.promised_on}", amount_minor=data.amount_minor,
                    currency=data.currency, invoice_ids=data.invoice_ids,
                    data={"promised_on": data.promised_on.isoformat()})
    await rm.set_collection_state(session, event.tenant_id, client_id, state="promised",
                                  promised_on=data.promised_on, promised_minor=data.amount_minor,
                                  occurred_at=event.occurred_at)
    await rm.refresh_invoices(session, event.tenant_id, data.invoice_ids)


# --- gl_posting ---------------------------------------------------------------------------------

async def on_gl_posted(session: AsyncSession, event: Envelope, data: EventData) -> None:
    await rm.record_gl_posting(session, event.tenant_id, data.model_dump(mode="json"), event.occurred_at)
    await rm.resolve_exception(session, event.tenant_id, f"gl_post_failed:{data.entry_id}", event.occurred_at)


async def on_gl_post_failed(session: AsyncSession, event: Envelope, data: EventData) -> None:
    action = ("gl_posting retries by itself; if this stays open, check the accounting connection."
              if data.retryable else
              f"Fix the account mapping or the {data.system} connection in gl_posting, then retry the entry.")
    await rm.open_exception(
        session, event.tenant_id, f"gl_post_failed:{data.entry_id}", kind="gl_post_failed",
        client_id=event.client_id, subject_id=data.entry_id, title=f"{data.system} posting failed ({data.purpose})",
        detail=data.reason, action=action, action_href=None, occurred_at=event.occurred_at,
        retryable=data.retryable)
    posted_at = await rm.gl_posted_at(session, event.tenant_id, data.entry_id)
    if posted_at is not None:  # a later attempt posted before this failure reached us
        await rm.resolve_exception(session, event.tenant_id, f"gl_post_failed:{data.entry_id}", posted_at)


BATCH_HANDLERS: dict[str, BatchHandler] = {"invoice.created": on_invoices, "invoice.updated": on_invoices,
                                           "payment.initiated": on_payments, "payment.settled": on_payments}

HANDLERS: dict[str, Handler] = {
    "tenant.updated": tenant_replica.apply_tenant_updated,
    "client.upserted": on_client_upserted,
    "agreement.upserted": on_agreement_upserted,
    "invoice.created": on_invoice,
    "invoice.updated": on_invoice,
    "invoice.voided": on_invoice_voided,
    "credit_memo.created": on_credit_memo_created,
    "ticket.flagged": on_ticket_flagged,
    "psa.payment_recorded": on_psa_payment_recorded,
    "psa.sync_failed": on_psa_sync_failed,
    "payment_method.updated": on_payment_method_updated,
    "autopay.changed": on_autopay_changed,
    "payment.initiated": on_payment,
    "payment.settled": on_payment,
    "payment.failed": on_payment_failed,
    "payment.refunded": on_payment_refunded,
    "payment.disputed": on_payment_disputed,
    "installment_plan.created": on_installment_plan_created,
    "payout.paid": on_payout_paid,
    "reminder.sent": on_reminder_sent,
    "collection.escalated": on_collection_escalated,
    "collection.paused": on_collection_paused,
    "promise.recorded": on_promise_recorded,
    "gl.posted": on_gl_posted,
    "gl.post_failed": on_gl_post_failed,
}
