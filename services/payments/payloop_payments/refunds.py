"""Refunds, full or partial: the refund row is committed before Stripe is called and its id is the
Idempotency-Key; the money comes back out of the overpayment credit first, then the invoices."""
from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop import audit
from payloop.auth import Principal
from payloop.problems import NotFound, Problem

from payloop_payments import charging, repository
from payloop_payments.domain.allocation import Allocation, split_refund
from payloop_payments.models import Payment, Refund
from payloop_payments.stripe_gateway import StripeGateway

REFUNDABLE = ("succeeded", "partially_refunded")


async def refund(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, *, principal: Principal,
                 payment_id: uuid.UUID, amount_minor: int | None, reason: str | None, idempotency_key: str) -> Refund:
    """Refund `payment_id`; who asked is audited with the refund row, before the money moves."""
    tenant_id = principal.tenant_id
    async with factory() as session, session.begin():
        existing = await session.scalar(select(Refund).where(Refund.tenant_id == tenant_id,
                                                             Refund.idempotency_key == idempotency_key))
        if existing is not None:
            if existing.payment_id != payment_id:
                raise Problem(422, "Idempotency-Key reused", "this Idempotency-Key was used for another refund")
            return existing
        payment = await repository.payment(session, tenant_id, payment_id, lock=True)
        if payment is None:
            raise NotFound("payment")
        if payment.status not in REFUNDABLE:
            raise Problem(409, "Not refundable", f"the payment is {payment.status}")
        in_flight = sum((await session.scalars(select(Refund.amount_minor).where(
            Refund.payment_id == payment.id, Refund.status == "created"))).all())
        available = payment.amount_minor - payment.refunded_minor - in_flight
        amount = available if amount_minor is None else amount_minor
        if amount <= 0 or amount > available:
            raise Problem(422, "Refund too large", f"at most {available} can be refunded")
        row = Refund(tenant_id=tenant_id, payment_id=payment.id, idempotency_key=idempotency_key,
                     amount_minor=amount, reason=reason, status="created")
        session.add(row)
        await session.flush()
        await audit.record(session, principal, "payment.refund_requested", ("payment", str(payment.id)),
                           {"refund_id": str(row.id), "amount_minor": amount, "currency": payment.currency,
                            "reason": reason}, producer=charging.PRODUCER, client_id=payment.client_id)
        account, _ = await charging.tenant_account(session, tenant_id)
        refund_id, intent_id = row.id, payment.stripe_payment_intent_id
    stripe_refund_id = await gateway.refund(payment_intent_id=intent_id, amount_minor=amount,
                                            idempotency_key=f"payloop-refund-{refund_id}", account=account)
    async with factory() as session, session.begin():
        return await _record(session, refund_id, stripe_refund_id)


async def _record(session: AsyncSession, refund_id: uuid.UUID, stripe_refund_id: str) -> Refund:
    row = await session.get(Refund, refund_id, with_for_update=True)
    if row.status == "succeeded":
        return row
    payment = await session.get(Payment, row.payment_id, with_for_update=True)
    allocations = await repository.allocations_of(session, payment.id)
    credit_refunded = payment.refunded_minor - sum(a.refunded_minor for a in allocations)
    client = await repository.client(session, payment.tenant_id, payment.client_id, lock=True)
    # Credit already spent on a later invoice cannot come back out of credit: take it from invoices.
    credit_left = min(payment.credit_minor - credit_refunded, client.credit_minor)
    remaining = [Allocation(a.invoice_id, a.amount_minor - a.refunded_minor) for a in allocations]
    from_credit, reversals = split_refund(row.amount_minor, [a for a in remaining if a.amount_minor > 0],
                                          credit_left)
    client.credit_minor -= from_credit
    by_invoice = {a.invoice_id: a for a in allocations}
    for part in reversals:
        by_invoice[part.invoice_id].refunded_minor += part.amount_minor
        invoice = await repository.invoice(session, payment.tenant_id, part.invoice_id, lock=True)
        invoice.collected_minor -= part.amount_minor
    payment.refunded_minor += row.amount_minor
    payment.status = "refunded" if payment.refunded_minor == payment.amount_minor else "partially_refunded"
    row.status, row.stripe_refund_id = "succeeded", stripe_refund_id
    await session.flush()
    await charging.payment_event(session, "payment.refunded", payment, refund_id=str(row.id),
                                 refunded_minor=row.amount_minor, reason=row.reason,
                                 processor_refund_id=stripe_refund_id)
    return row
