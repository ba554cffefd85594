"""Installment plans: an invoice's open balance split into N parts on a schedule, charged to a
stored method by the scheduler like auto-pay (merchant-initiated, so a failed part follows the
tenant's retry policy), announced with `installment_plan.created`.

A part's state is its payment's state (the payment's idempotency key is `installment:<part id>`),
so nothing here has to be kept in step with the charging code.
"""
from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import outbox
from payloop.events import new_event
from payloop.problems import NotFound, Problem
from payloop.tenant_replica import load_profile

from payloop_payments import repository
from payloop_payments.charging import PRODUCER, PaymentRequest
from payloop_payments.domain.allocation import AllocationError, split_installments
from payloop_payments.models import InstallmentPart, InstallmentPlan, Invoice, Payment, PaymentMethod


def part_key(part_id: uuid.UUID) -> str:
    return f"installment:{part_id}"


@dataclass(frozen=True)
class PartState:
    part: InstallmentPart
    payment: Payment | None

    @property
    def status(self) -> str:
        """scheduled until charged; then the payment's status (succeeded, failed, processing, ...)."""
        return self.payment.status if self.payment else "scheduled"


async def create_plan(session: AsyncSession, tenant_id: str, client_id: str, *, invoice_id: str,
                      payment_method_id: uuid.UUID, parts: int, first_due_on: date | None, every_days: int,
                      idempotency_key: str, now: datetime) -> InstallmentPlan:
    if await repository.client(session, tenant_id, client_id) is None:
        raise NotFound("client")
    # The invoice's row lock comes before the key lookup: a concurrent duplicate (a double-clicked
    # checkout) waits here, then finds the first request's plan instead of colliding with it.
    invoice = await repository.invoice(session, tenant_id, invoice_id, lock=True)
    existing = await plan_by_key(session, tenant_id, idempotency_key)
    if existing is not None:
        if (existing.client_id, existing.invoice_id) != (client_id, invoice_id):
            raise Problem(422, "Idempotency-Key reused", "this Idempotency-Key was used for another plan")
        return existing
    if invoice is None or invoice.client_id != client_id:
        raise NotFound("invoice")
    method = await repository.method(session, tenant_id, payment_method_id)
    if method is None or method.client_id != client_id:
        raise NotFound("payment method")
    if method.status != "active":
        raise Problem(409, "Payment method unusable", f"the payment method is {method.status}")
    balance = repository.invoice_open_minor(invoice)
    dated = schedule(balance, parts, first_due_on or await tenant_today(session, tenant_id, now), every_days)
    plan = InstallmentPlan(tenant_id=tenant_id, client_id=client_id, invoice_id=invoice_id,
                           payment_method_id=method.id, idempotency_key=idempotency_key, currency=invoice.currency,
                           total_minor=balance, status="active", created_at=now)
    session.add(plan)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise Problem(409, "Invoice already on a plan", "cancel the invoice's active plan first") from None
    for seq, (due_on, amount) in enumerate(dated, start=1):
        session.add(InstallmentPart(plan_id=plan.id, tenant_id=tenant_id, seq=seq, due_on=due_on, amount_minor=amount))
    await session.flush()
    await outbox.publish(session, new_event(
        "installment_plan.created", tenant_id=tenant_id, client_id=client_id, producer=PRODUCER, data={
            "plan_id": str(plan.id), "invoice_id": invoice_id, "payment_method_id": str(method.id),
            "currency": plan.currency,
            "parts": [{"due_on": due_on.isoformat(), "amount_minor": a} for due_on, a in dated]}))
    return plan


def schedule(balance_minor: int, parts: int, start: date, every_days: int) -> list[tuple[date, int]]:
    """The parts a plan would have: (due day, amount), amounts summing exactly to the balance."""
    try:
        amounts = split_installments(balance_minor, parts)
    except AllocationError as exc:
        raise Problem(422, "Cannot split the balance", str(exc)) from None
    return [(start + timedelta(days=every_days * i), amount) for i, amount in enumerate(amounts)]


async def tenant_today(session: AsyncSession, tenant_id: str, now: datetime) -> date:
    profile = await load_profile(session, tenant_id)
    return now.astimezone(ZoneInfo(profile.timezone if profile else "UTC")).date()


async def plan_parts(session: AsyncSession, plan: InstallmentPlan) -> list[PartState]:
    parts = (await session.scalars(select(InstallmentPart).where(InstallmentPart.plan_id == plan.id)
                                   .order_by(InstallmentPart.seq))).all()
    payments = {p.installment_part_id: p for p in (await session.scalars(select(Payment).where(
        Payment.tenant_id == plan.tenant_id, Payment.installment_part_id.in_([p.id for p in parts])))).all()}
    return [PartState(part, payments.get(part.id)) for part in parts]


async def plan(session: AsyncSession, tenant_id: str, plan_id: uuid.UUID) -> InstallmentPlan | None:
    found = await session.get(InstallmentPlan, plan_id)
    return found if found is not None and found.tenant_id == tenant_id else None


async def plan_by_key(session: AsyncSession, tenant_id: str, idempotency_key: str) -> InstallmentPlan | None:
    return await session.scalar(select(InstallmentPlan).where(
        InstallmentPlan.tenant_id == tenant_id, InstallmentPlan.idempotency_key == idempotency_key))


async def plans_of(session: AsyncSession, tenant_id: str, client_id: str) -> list[InstallmentPlan]:
    return list((await session.scalars(select(InstallmentPlan).where(
        InstallmentPlan.tenant_id == tenant_id, InstallmentPlan.client_id == client_id,
    ).order_by(InstallmentPlan.created_at))).all())


async def due_parts(session: AsyncSession, now: datetime,
                    today_of: Callable[[str], Awaitable[date]]) -> list[PaymentRequest]:
    """Parts whose day has come (in the tenant's timezone) and that have no payment yet.

    A part is charged at most what is still open on the invoice (the client may have paid some of
    it another way); a part whose invoice is settled is not charged at all.
    """
    rows = (await session.execute(
        select(InstallmentPart, InstallmentPlan, Invoice)
        .join(InstallmentPlan, InstallmentPlan.id == InstallmentPart.plan_id)
        .join(Invoice, (Invoice.tenant_id == InstallmentPlan.tenant_id) & (Invoice.invoice_id == InstallmentPlan.invoice_id))
        .join(PaymentMethod, PaymentMethod.id == InstallmentPlan.payment_method_id)
        .where(InstallmentPlan.status == "active", PaymentMethod.status == "active",
               InstallmentPart.due_on <= now.date() + timedelta(days=1),  # no timezone is further ahead
               ~select(Payment.id).where(Payment.installment_part_id == InstallmentPart.id).exists())
        .order_by(InstallmentPart.due_on, InstallmentPart.seq).limit(100)
    )).all()
    due, seen_plans = [], set()
    for part, plan_row, invoice in rows:
        # One part per invoice per pass: the next part's amount depends on what this one leaves open.
        if plan_row.id in seen_plans or part.due_on > await today_of(plan_row.tenant_id):
            continue
        amount = min(part.amount_minor, repository.invoice_open_minor(invoice))
        if amount <= 0:
            continue
        seen_plans.add(plan_row.id)
        due.append(PaymentRequest(
            tenant_id=plan_row.tenant_id, client_id=plan_row.client_id, payment_method_id=plan_row.payment_method_id,
            idempotency_key=part_key(part.id), origin="installment", client_initiated=False,
            amount_minor=amount, allocations={plan_row.invoice_id: amount}, installment_part_id=part.id))
    return due
