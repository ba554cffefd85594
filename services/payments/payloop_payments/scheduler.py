"""The auto-pay scheduler: charges what is due, exactly once per scheduled attempt.

Two scheduler processes may run at once. A first charge is a payment whose idempotency key is
`autopay:<invoice id>` or `installment:<part id>` (unique per tenant), so only one process can create it; a retry is claimed
with `SELECT ... FOR UPDATE SKIP LOCKED` and numbered by a unique (payment, attempt number). Time is
a parameter (`now`), so tests advance a clock instead of waiting.
"""
from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop.tenant_replica import load_profile

from payloop_payments import charging, installments, repository
from payloop_payments.charging import PaymentRequest
from payloop_payments.models import (
    AutopayEnrollment, InstallmentPlan, Invoice, Payment, PaymentAttempt, PaymentMethod,
)
from payloop_payments.settings import payments_settings
from payloop_payments.stripe_gateway import StripeGateway

log = structlog.get_logger(__name__)

# An attempt still `created` after this was interrupted before Stripe answered: present it again.
STALE_ATTEMPT = timedelta(minutes=2)
BATCH = 100


def charge_date(enrollment: AutopayEnrollment, invoice: Invoice) -> date:
    if enrollment.rule == "on_issue":
        return invoice.issued_on
    if enrollment.rule == "days_before_due":
        return invoice.due_on - timedelta(days=enrollment.days_before_due)
    return invoice.due_on


def chargeable(enrollment: AutopayEnrollment, invoice: Invoice, today: date) -> bool:
    open_minor = repository.invoice_open_minor(invoice)
    if open_minor <= 0 or charge_date(enrollment, invoice) > today:
        return False
    if set(invoice.line_kinds) & set(enrollment.excluded_kinds):
        return False
    # Above the cap the client pays by hand; collections chases it like any other invoice.
    return enrollment.cap_minor is None or open_minor <= enrollment.cap_minor


async def _today(session: AsyncSession, tenant_id: str, now: datetime, cache: dict[str, date]) -> date:
    if tenant_id not in cache:
        profile = await load_profile(session, tenant_id)
        cache[tenant_id] = now.astimezone(ZoneInfo(profile.timezone if profile else "UTC")).date()
    return cache[tenant_id]


async def due_first_charges(session: AsyncSession, now: datetime) -> list[PaymentRequest]:
    """Invoices of enrolled clients whose charge day (in the tenant's timezone) has come."""
    rows = (await session.execute(
        select(AutopayEnrollment, Invoice)
        .join(Invoice, (Invoice.tenant_id == AutopayEnrollment.tenant_id)
              & (Invoice.client_id == AutopayEnrollment.client_id))
        .join(PaymentMethod, PaymentMethod.id == AutopayEnrollment.payment_method_id)
        .where(AutopayEnrollment.active, PaymentMethod.status == "active",
               Invoice.status.in_(repository.CHARGEABLE_STATUSES),
               # An invoice on an installment plan is charged part by part, never in full.
               ~select(InstallmentPlan.id).where(InstallmentPlan.tenant_id == Invoice.tenant_id,
                                                 InstallmentPlan.invoice_id == Invoice.invoice_id,
                                                 InstallmentPlan.status == "active").exists(),
               ~select(Payment.id).where(Payment.tenant_id == Invoice.tenant_id,
                                         Payment.idempotency_key == "autopay:" + Invoice.invoice_id).exists())
        .order_by(Invoice.due_on).limit(BATCH)
    )).all()
    today_by_tenant: dict[str, date] = {}
    due = []
    for enrollment, invoice in rows:
        if chargeable(enrollment, invoice, await _today(session, invoice.tenant_id, now, today_by_tenant)):
            due.append(PaymentRequest(
                tenant_id=invoice.tenant_id, client_id=invoice.client_id,
                payment_method_id=enrollment.payment_method_id, idempotency_key=f"autopay:{invoice.invoice_id}",
                origin="autopay", client_initiated=False, invoice_ids=[invoice.invoice_id], use_credit=True))
    return due


async def run_once(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, *, now: datetime) -> int:
    """One pass: first charges (auto-pay, installment parts), due retries, interrupted attempts.

    Returns how many were presented."""
    presented = 0
    async with factory() as session:
        due = await due_first_charges(session, now)
        today_by_tenant: dict[str, date] = {}
        due += await installments.due_parts(
            session, now, lambda tenant_id: _today(session, tenant_id, now, today_by_tenant))
    for request in due:
        _, created = await charging.start(factory, gateway, request, now=now)
        presented += created
    while True:
        payment_id = await _claim_retry(factory, now)
        if payment_id is None:
            break
        presented += await charging.retry(factory, gateway, payment_id, now=now, claimed=True) is not None
    async with factory() as session:
        stale = (await session.scalars(select(PaymentAttempt.id).where(
            PaymentAttempt.status == "created", PaymentAttempt.created_at < now - STALE_ATTEMPT).limit(BATCH))).all()
    for attempt_id in stale:
        await charging.present(factory, gateway, attempt_id, now=now)
    return presented


async def _claim_retry(factory: async_sessionmaker[AsyncSession], now: datetime):
    """Take one due retry; a concurrent scheduler skips the row this one holds."""
    async with factory() as session, session.begin():
        payment = await session.scalar(
            select(Payment).where(Payment.status == "failed", Payment.next_attempt_at <= now)
            .order_by(Payment.next_attempt_at).limit(1).with_for_update(skip_locked=True))
        if payment is None:
            return None
        payment.status = "retrying"  # nobody else picks it once this commits
        return payment.id


async def scheduler_loop(app: FastAPI, stop: asyncio.Event) -> None:
    settings = payments_settings()
    if not settings.payments_run_scheduler:
        await stop.wait()  # stay alive: /readyz counts a finished background task as a failure
        return
    from payloop_payments.api import clock_of, gateway_of

    while not stop.is_set():
        try:
            await run_once(app.state.session_factory, gateway_of(app), now=clock_of(app).now())
        except Exception:
            log.exception("payments.scheduler.pass_failed")
        try:
            await asyncio.wait_for(stop.wait(), settings.payments_scheduler_interval_s)
        except TimeoutError:
            pass
