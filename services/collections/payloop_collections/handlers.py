"""Event handlers: the local state collections decides from (clients, invoices, payments, context).

Handlers run inside the consumer's transaction with an inbox claim, so a redelivered event has no
second effect. They only record facts; the scheduler turns facts into reminders.
"""
from __future__ import annotations

from datetime import date, datetime

import structlog
from payloop import tenant_replica
from payloop.consumer import BatchHandler, Handler, newest_per_key
from payloop.events.catalogue import EventData
from payloop.events.envelope import Envelope
from sqlalchemy.ext.asyncio import AsyncSession

from payloop_collections import cases, repository
from payloop_collections.clock import Clock

log = structlog.get_logger(__name__)


def build_handlers(clock: Clock) -> tuple[dict[str, Handler], dict[str, BatchHandler]]:
    """The handlers and batch handlers, with the service's clock for the time of what they record."""

    def client_of(event: Envelope) -> str | None:
        if event.client_id is None:
            log.warning("collections.event.no_client", event_type=event.type, event_id=str(event.id))
        return event.client_id

    async def client_upserted(session: AsyncSession, event: Envelope, data: EventData) -> None:
        await repository.update_client(
            session, event.tenant_id, data.client_id, name=data.name,
            billing_emails=[e.strip().lower() for e in data.billing_emails if e.strip()],
            timezone=data.timezone)

    async def invoice_changed(session: AsyncSession, event: Envelope, data: EventData) -> None:
        await invoices_changed(session, [(event, data)])

    async def invoices_changed(session: AsyncSession, run: list[tuple[Envelope, EventData]]) -> None:
        run = [(event, data) for event, data in run if client_of(event) is not None]
        if not run:
            return
        await repository.ensure_clients(session, [(event.tenant_id, event.client_id) for event, _ in run])
        await repository.upsert_invoices(session, [
            (event.tenant_id, event.client_id, data.model_dump(mode="json"), event.occurred_at)
            for event, data in newest_per_key(run, lambda event, data: (event.tenant_id, data.invoice_id))])
        # Each paid invoice is marked paid on the PSA's paid date, or else on the day of the first event
        # that said it was paid, as one by one.
        first_paid: dict[tuple[str, str], tuple[Envelope, date]] = {}
        for event, data in run:
            if data.status == "paid":
                first_paid.setdefault((event.tenant_id, data.invoice_id),
                                      (event, data.paid_on or event.occurred_at.date()))
        by_tenant: dict[str, dict[str, tuple[Envelope, date]]] = {}
        for (tenant_id, invoice_id), marked in first_paid.items():
            by_tenant.setdefault(tenant_id, {})[invoice_id] = marked
        for tenant_id, paid in by_tenant.items():
            await _mark_paid_many(session, tenant_id, paid)

    async def invoice_voided(session: AsyncSession, event: Envelope, data: EventData) -> None:
        client_id = client_of(event)
        await repository.set_invoice(session, event.tenant_id, [data.invoice_id], status="void")
        if client_id:
            await repository.add_timeline(session, event.tenant_id, client_id, "stopped", clock.now(),
                                          invoice_id=data.invoice_id, reason="voided")

    async def ticket_flagged(session: AsyncSession, event: Envelope, data: EventData) -> None:
        client_id = client_of(event)
        if client_id is None:
            return
        invoice_ids = data.invoice_ids or [i.invoice_id for i, _ in
                                           await repository.open_invoices(session, event.tenant_id, client_id)]
        if data.open:
            await repository.set_invoice(session, event.tenant_id, invoice_ids, dispute_ticket_id=data.ticket_id)
            await cases.paused(session, event.tenant_id, client_id, "dispute", clock.now(), causation=event,
                               ticket_id=data.ticket_id, invoice_ids=invoice_ids)
        else:
            await repository.set_invoice(session, event.tenant_id, invoice_ids, dispute_ticket_id=None)
            await repository.add_timeline(session, event.tenant_id, client_id, "resumed", clock.now(),
                                          reason="dispute_closed", ticket_id=data.ticket_id)

    async def payment_initiated(session: AsyncSession, event: Envelope, data: EventData) -> None:
        await payments_initiated(session, [(event, data)])

    async def payments_initiated(session: AsyncSession, run: list[tuple[Envelope, EventData]]) -> None:
        for tenant_id, events in _by_tenant(run).items():
            # The run's last payment for each invoice is the one in flight, as one by one.
            await repository.set_payments_in_flight(session, tenant_id, {
                a.invoice_id: (data.payment_id, event.occurred_at)
                for event, data in events for a in data.allocations})

    async def payment_settled(session: AsyncSession, event: Envelope, data: EventData) -> None:
        await payments_settled(session, [(event, data)])

    async def payments_settled(session: AsyncSession, run: list[tuple[Envelope, EventData]]) -> None:
        for tenant_id, events in _by_tenant(run).items():
            await _settle(session, tenant_id, events)

    async def _settle(session: AsyncSession, tenant_id: str, run: list[tuple[Envelope, EventData]]) -> None:
        """Record one tenant's settled payments; an invoice is paid on the day of the first event after
        which it owes nothing, as one by one (partial payments of one invoice may share the run)."""
        invoice_ids = list(dict.fromkeys(a.invoice_id for _, data in run for a in data.allocations))
        owed = await repository.amounts_owed(session, tenant_id, invoice_ids)
        allocations: dict[tuple[str, str], tuple[int, date]] = {}
        for event, data in run:
            day = _settled_on(event, data)
            for a in data.allocations:
                allocations.setdefault((data.payment_id, a.invoice_id), (a.amount_minor, day))
        new = await repository.add_payments(session, tenant_id, allocations)
        await repository.set_invoice(session, tenant_id, invoice_ids, payment_in_flight_id=None,
                                     payment_in_flight_since=None, retry_at=None, autopay_failed=False)
        collected: dict[str, int] = {}
        paid: dict[str, tuple[Envelope, date]] = {}
        for event, data in run:
            for a in data.allocations:
                if (data.payment_id, a.invoice_id) in new:
                    new.discard((data.payment_id, a.invoice_id))  # its first allocation is the one recorded
                    collected[a.invoice_id] = collected.get(a.invoice_id, 0) + a.amount_minor
            if client_of(event) is None:
                continue
            known = [i for i in dict.fromkeys(a.invoice_id for a in data.allocations) if i in owed]
            # In due-date order, as one by one's balance query gives them.
            for invoice_id in sorted(known, key=lambda i: owed[i].due_on):
                if owed[invoice_id].balance(collected.get(invoice_id, 0)) <= 0:
                    paid.setdefault(invoice_id, (event, _settled_on(event, data)))
        await _mark_paid_many(session, tenant_id, paid)

    async def payment_failed(session: AsyncSession, event: Envelope, data: EventData) -> None:
        client_id = client_of(event)
        invoice_ids = [a.invoice_id for a in data.allocations]
        retrying = data.retryable and data.next_attempt_at is not None
        await repository.set_invoice(
            session, event.tenant_id, invoice_ids, payment_in_flight_id=None, payment_in_flight_since=None,
            retry_at=data.next_attempt_at if retrying else None, retry_attempt=data.attempt,
            autopay_failed=not retrying)
        if client_id:
            await repository.add_timeline(
                session, event.tenant_id, client_id, "payment_failed", clock.now(), payment_id=data.payment_id,
                invoice_ids=invoice_ids, decline_code=data.decline_code, attempt=data.attempt,
                next_attempt_at=data.next_attempt_at.isoformat() if retrying else None)

    async def payment_reversed(session: AsyncSession, event: Envelope, data: EventData) -> None:
        """A refund, a chargeback or a returned debit takes money back: the invoices it covered are owed
        again. An inquiry (`warning_*`) takes nothing; a won dispute gives back what its chargeback took."""
        client_id = client_of(event)
        if event.type == "payment.refunded":
            taken, kind = data.taken_back(data.refunded_minor), "payment_reversed"
        elif data.status.startswith("warning_"):
            return
        elif data.status == "won":
            taken, kind = [(i, -amount) for i, amount in data.taken_back(data.disputed_minor)], "payment_restored"
        else:
            taken, kind = data.taken_back(data.disputed_minor), "payment_reversed"
        for invoice_id, amount in taken:
            await repository.reduce_payment(session, event.tenant_id, data.payment_id, invoice_id, amount)
        invoice_ids = [invoice_id for invoice_id, _ in taken]
        if kind == "payment_reversed":
            await repository.set_invoice(session, event.tenant_id, invoice_ids, paid_on=None)
        if client_id:
            await repository.add_timeline(session, event.tenant_id, client_id, kind, clock.now(),
                                          payment_id=data.payment_id, invoice_ids=invoice_ids, event_type=event.type)

    async def autopay_changed(session: AsyncSession, event: Envelope, data: EventData) -> None:
        client_id = client_of(event)
        if client_id is None:
            return
        await repository.update_client(session, event.tenant_id, client_id, autopay_enrolled=data.enrolled,
                                       autopay_rule=data.rule)
        await repository.add_timeline(session, event.tenant_id, client_id, "autopay_changed", clock.now(),
                                      enrolled=data.enrolled, reason=data.reason)

    async def installment_plan_created(session: AsyncSession, event: Envelope, data: EventData) -> None:
        client_id = client_of(event)
        await repository.set_invoice(session, event.tenant_id, [data.invoice_id], installment_plan_id=data.plan_id,
                                     autopay_failed=False)
        if client_id:
            last = max((p.due_on for p in data.parts), default=None)
            await cases.paused(session, event.tenant_id, client_id, "installment_plan", clock.now(), until=last,
                               causation=event, plan_id=data.plan_id, invoice_id=data.invoice_id)

    async def _mark_paid_many(session: AsyncSession, tenant_id: str, paid: dict[str, tuple[Envelope, date]]) -> None:
        """Stop the sequence of paid invoices (each with the event that said so and its day) and learn
        from how long their clients took."""
        newly_paid = await repository.mark_paid(session, tenant_id,
                                                {invoice_id: day for invoice_id, (_, day) in paid.items()})
        if not newly_paid:
            return
        now: datetime = clock.now()
        causes: dict[str, Envelope] = {}
        for invoice_id in newly_paid:
            causes.setdefault(paid[invoice_id][0].client_id, paid[invoice_id][0])
        await repository.add_timelines(session, [
            dict(tenant_id=tenant_id, client_id=paid[invoice_id][0].client_id, invoice_id=invoice_id, kind="stopped",
                 detail={"reason": "paid"}, at=now) for invoice_id in newly_paid])
        await cases.refresh_behaviours(session, tenant_id, causes, now)

    batch_handlers: dict[str, BatchHandler] = {"invoice.created": invoices_changed,
                                               "invoice.updated": invoices_changed,
                                               "payment.initiated": payments_initiated,
                                               "payment.settled": payments_settled}
    return {
        "tenant.updated": tenant_replica.apply_tenant_updated,
        "client.upserted": client_upserted,
        "invoice.created": invoice_changed,
        "invoice.updated": invoice_changed,
        "invoice.voided": invoice_voided,
        "ticket.flagged": ticket_flagged,
        "payment.initiated": payment_initiated,
        "payment.settled": payment_settled,
        "payment.failed": payment_failed,
        "payment.refunded": payment_reversed,
        "payment.disputed": payment_reversed,
        "autopay.changed": autopay_changed,
        "installment_plan.created": installment_plan_created,
    }, batch_handlers


def _by_tenant(run: list[tuple[Envelope, EventData]]) -> dict[str, list[tuple[Envelope, EventData]]]:
    """The run's events per tenant, each tenant's in their order: tenants share no state."""
    by_tenant: dict[str, list[tuple[Envelope, EventData]]] = {}
    for event, data in run:
        by_tenant.setdefault(event.tenant_id, []).append((event, data))
    return by_tenant


def _settled_on(event: Envelope, data: EventData) -> date:
    return (data.settled_at or event.occurred_at).date()
