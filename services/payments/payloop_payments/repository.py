"""Queries of the payments service. Every one is filtered by tenant."""
from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from payloop_payments.domain.allocation import OpenInvoice, open_balance
from payloop_payments.models import (
    AutopayEnrollment, Client, Invoice, Payment, PaymentAllocation, PaymentAttempt, PaymentMethod,
)

CHARGEABLE_STATUSES = ("open", "partially_paid")


def invoice_open_minor(invoice: Invoice) -> int:
    if invoice.status not in CHARGEABLE_STATUSES:
        return 0
    return open_balance(psa_balance_minor=invoice.psa_balance_minor, total_minor=invoice.total_minor,
                        credited_minor=invoice.credited_minor, collected_minor=invoice.collected_minor,
                        pending_minor=invoice.pending_minor)


def as_open(invoice: Invoice) -> OpenInvoice:
    return OpenInvoice(invoice.invoice_id, invoice.due_on, invoice_open_minor(invoice))


async def client(session: AsyncSession, tenant_id: str, client_id: str, *, lock: bool = False) -> Client | None:
    return await session.get(Client, (tenant_id, client_id), with_for_update=lock)


async def invoice(session: AsyncSession, tenant_id: str, invoice_id: str, *, lock: bool = False) -> Invoice | None:
    return await session.get(Invoice, (tenant_id, invoice_id), with_for_update=lock)


async def _by_keys(session: AsyncSession, model, columns: tuple, keys: Collection[tuple], *, lock: bool,
                   refresh: bool = False) -> list:
    """Rows of `model` whose (tenant, id) `columns` are among `keys`, in key order: the order they are
    locked in with `lock`, so two callers never wait on each other in a circle. `refresh`: what the
    session already holds is overwritten with what was read."""
    query = select(model).where(tuple_(*columns).in_(sorted(keys))).order_by(*columns)
    if refresh:
        query = query.execution_options(populate_existing=True)
    if lock:
        query = query.with_for_update()
    return list((await session.scalars(query)).all())


async def clients(session: AsyncSession, keys: Collection[tuple[str, str]], *,
                  lock: bool = False) -> dict[tuple[str, str], Client]:
    """Clients by (tenant, client id)."""
    found = await _by_keys(session, Client, (Client.tenant_id, Client.client_id), keys, lock=lock)
    return {(c.tenant_id, c.client_id): c for c in found}


async def invoices_by_id(session: AsyncSession, keys: Collection[tuple[str, str]], *,
                         lock: bool = False) -> dict[tuple[str, str], Invoice]:
    """Invoices by (tenant, invoice id)."""
    found = await _by_keys(session, Invoice, (Invoice.tenant_id, Invoice.invoice_id), keys, lock=lock)
    return {(i.tenant_id, i.invoice_id): i for i in found}


_COLLECT = (update(Invoice.__table__)
            .where(Invoice.__table__.c.tenant_id == bindparam("t"), Invoice.__table__.c.invoice_id == bindparam("i"))
            .values(pending_minor=Invoice.__table__.c.pending_minor - bindparam("amount"),
                    collected_minor=Invoice.__table__.c.collected_minor + bindparam("amount")))


async def move_pending_to_collected(session: AsyncSession, parts: list[tuple[str, str, int]]) -> None:
    """What settled payments held as pending is collected: (tenant, invoice, amount) parts, one statement for
    all (each row locked by its update, in key order) instead of reading each invoice first."""
    if not parts:
        return
    parts = sorted(parts)
    await session.execute(_COLLECT, [{"t": t, "i": i, "amount": amount} for t, i, amount in parts])
    # Written beside the ORM: a copy of one of these invoices the session holds no longer says what the row does.
    for tenant_id, invoice_id, _ in parts:
        held = session.identity_map.get(session.identity_key(Invoice, (tenant_id, invoice_id)))
        if held is not None:
            session.expire(held)


async def invoices_of(session: AsyncSession, tenant_id: str, client_id: str, *,
                      invoice_ids: list[str] | None = None, lock: bool = False) -> list[Invoice]:
    query = select(Invoice).where(Invoice.tenant_id == tenant_id, Invoice.client_id == client_id)
    if invoice_ids is not None:
        query = query.where(Invoice.invoice_id.in_(invoice_ids))
    query = query.order_by(Invoice.due_on, Invoice.invoice_id)
    if lock:
        query = query.with_for_update()
    return list((await session.scalars(query)).all())


async def method(session: AsyncSession, tenant_id: str, method_id: uuid.UUID, *,
                 lock: bool = False) -> PaymentMethod | None:
    found = await session.get(PaymentMethod, method_id, with_for_update=lock)
    return found if found is not None and found.tenant_id == tenant_id else None


async def methods(session: AsyncSession, keys: Collection[tuple[str, uuid.UUID]]) -> dict[tuple[str, uuid.UUID], PaymentMethod]:
    """Payment methods by (tenant, method id)."""
    found = await session.scalars(select(PaymentMethod).where(
        tuple_(PaymentMethod.tenant_id, PaymentMethod.id).in_(list(keys))))
    return {(m.tenant_id, m.id): m for m in found.all()}


async def methods_of(session: AsyncSession, tenant_id: str, client_id: str) -> list[PaymentMethod]:
    return list((await session.scalars(select(PaymentMethod).where(
        PaymentMethod.tenant_id == tenant_id, PaymentMethod.client_id == client_id,
    ).order_by(PaymentMethod.created_at))).all())


async def enrollment(session: AsyncSession, tenant_id: str, client_id: str, *,
                     lock: bool = False) -> AutopayEnrollment | None:
    return await session.get(AutopayEnrollment, (tenant_id, client_id), with_for_update=lock)


async def payment(session: AsyncSession, tenant_id: str, payment_id: uuid.UUID, *,
                  lock: bool = False) -> Payment | None:
    found = await session.get(Payment, payment_id, with_for_update=lock)
    return found if found is not None and found.tenant_id == tenant_id else None


async def payment_by_key(session: AsyncSession, tenant_id: str, key: str) -> Payment | None:
    return await session.scalar(select(Payment).where(Payment.tenant_id == tenant_id,
                                                      Payment.idempotency_key == key))


async def payment_keys(session: AsyncSession, keys: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (tenant, idempotency key) pairs a payment already has."""
    rows = await session.execute(select(Payment.tenant_id, Payment.idempotency_key).where(
        tuple_(Payment.tenant_id, Payment.idempotency_key).in_(list(keys))))
    return {(tenant_id, key) for tenant_id, key in rows}


async def payments_by_id(session: AsyncSession, keys: Collection[tuple[str, uuid.UUID]], *,
                         lock: bool = False) -> list[Payment]:
    """Payments by (tenant, id), in the order they are locked in; what the session holds is refreshed."""
    return await _by_keys(session, Payment, (Payment.tenant_id, Payment.id), keys, lock=lock, refresh=True)


async def payment_by_intent(session: AsyncSession, intent_id: str) -> Payment | None:
    return await session.scalar(select(Payment).where(Payment.stripe_payment_intent_id == intent_id))


async def payment_by_charge(session: AsyncSession, charge_id: str) -> Payment | None:
    return await session.scalar(select(Payment).where(Payment.stripe_charge_id == charge_id))


async def payments_of(session: AsyncSession, tenant_id: str, *, client_id: str | None, after: uuid.UUID | None,
                      limit: int) -> list[Payment]:
    query = select(Payment).where(Payment.tenant_id == tenant_id)
    if client_id:
        query = query.where(Payment.client_id == client_id)
    if after:
        query = query.where(Payment.id > after)
    return list((await session.scalars(query.order_by(Payment.id).limit(limit))).all())


async def allocations_of(session: AsyncSession, payment_id: uuid.UUID) -> list[PaymentAllocation]:
    return list((await session.scalars(select(PaymentAllocation).where(
        PaymentAllocation.payment_id == payment_id).order_by(PaymentAllocation.invoice_id))).all())


async def attempts_of(session: AsyncSession, payment_id: uuid.UUID) -> list[PaymentAttempt]:
    return list((await session.scalars(select(PaymentAttempt).where(
        PaymentAttempt.payment_id == payment_id).order_by(PaymentAttempt.attempt_no))).all())


async def attempts_on_method(session: AsyncSession, method_id: uuid.UUID, *, since: datetime) -> list[PaymentAttempt]:
    return list((await session.scalars(select(PaymentAttempt).where(
        PaymentAttempt.payment_method_id == method_id, PaymentAttempt.created_at >= since,
    ).order_by(PaymentAttempt.created_at))).all())


async def attempt_by_key(session: AsyncSession, payment_id: uuid.UUID, key: str) -> PaymentAttempt | None:
    return await session.scalar(select(PaymentAttempt).where(PaymentAttempt.payment_id == payment_id,
                                                             PaymentAttempt.idempotency_key == key))


async def attempts_by_id(session: AsyncSession, keys: Collection[tuple[str, uuid.UUID]], *,
                         lock: bool = False) -> list[PaymentAttempt]:
    """Attempts by (tenant, id), in the order they are locked in; what the session holds is refreshed."""
    return await _by_keys(session, PaymentAttempt, (PaymentAttempt.tenant_id, PaymentAttempt.id), keys, lock=lock,
                          refresh=True)


async def attempt_by_intent(session: AsyncSession, intent_id: str) -> PaymentAttempt | None:
    return await session.scalar(select(PaymentAttempt).where(
        PaymentAttempt.stripe_payment_intent_id == intent_id).order_by(PaymentAttempt.attempt_no.desc()).limit(1))
