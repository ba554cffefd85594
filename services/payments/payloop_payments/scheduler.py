"""The auto-pay scheduler: charges what is due, exactly once per scheduled attempt.

Two scheduler processes may run at once. A first charge is a payment whose idempotency key is
`autopay:<invoice id>` or `installment:<part id>` (unique per tenant), so only one process can create it; a retry is claimed
with `SELECT ... FOR UPDATE SKIP LOCKED` and numbered by a unique (payment, attempt number). Time is
a parameter (`now`), so tests advance a clock instead of waiting.

Within a pass, up to `PAYLOOP_PAYMENTS_SCHEDULER_CONCURRENCY` charges are presented at once: Stripe's
answer takes most of a charge's time, and the Stripe gateway paces the requests under Stripe's rate
limit, so the run is bounded by the processor rather than by one charge after another. A pass that
presented a full batch is followed at once by the next; only a quieter one waits the interval.

The database work of a charge is shared with the others of its pass, which is most of what a charge
costs our CPU: the pass's first charges are reserved a hundred to a transaction (`charging.reserve_many`),
the next lot while the last charges of one are at Stripe, and Stripe's answers are recorded a group per
transaction (`OutcomeGroups`) instead of a transaction or two a charge. Neither changes what is
committed before Stripe is called, nor any key.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime, timedelta
from functools import partial
from typing import TypeVar
from zoneinfo import ZoneInfo

import structlog
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop.db import make_engine, make_session_factory
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
# Due charges a pass takes, reserved RESERVED_TOGETHER to a transaction: between passes Stripe waits on
# our queries, between the lots of a pass it does not (see _present_all).
BATCH = 500
RESERVED_TOGETHER = 100
T = TypeVar("T")


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


async def run_once(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, *, now: datetime,
                   concurrency: int | None = None, stop: asyncio.Event | None = None) -> int:
    """One pass: first charges (auto-pay, installment parts), due retries, interrupted attempts, each
    kind `concurrency` at a time (default: the setting).

    The first charges are reserved `RESERVED_TOGETHER` to a transaction, each committed before any of
    its charges is presented, and Stripe's answers are recorded a group at a time (`OutcomeGroups`).
    Once `stop` is set (the service stopping) nothing more is reserved or sent to Stripe: the charges at
    Stripe have their answers recorded, and a reserved charge not yet presented stays `created`, presented
    later with its key. Returns how many were presented."""
    concurrency = concurrency or payments_settings().payments_scheduler_concurrency
    stop = stop or asyncio.Event()
    async with factory() as session:
        due = await due_first_charges(session, now)
        today_by_tenant: dict[str, date] = {}
        due += await installments.due_parts(
            session, now, lambda tenant_id: _today(session, tenant_id, now, today_by_tenant))
        retries_due = await _retry_due(session, now)
        # Read now, presented last: what this pass presents is never this old (its attempts are made at `now`).
        stale = (await session.scalars(select(PaymentAttempt.id).where(
            PaymentAttempt.status == "created", PaymentAttempt.created_at < now - STALE_ATTEMPT).limit(BATCH))).all()
    outcomes = OutcomeGroups(factory, now=now, size=concurrency)
    try:
        presented = await _present_all(factory, gateway, now, concurrency, due, retries_due, stale, outcomes,
                                       stop)
    finally:
        await outcomes.written()
    return presented


async def _present_all(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, now: datetime,
                       concurrency: int, due: list[PaymentRequest], retries_due: bool, stale: list[uuid.UUID],
                       outcomes: OutcomeGroups, stop: asyncio.Event) -> int:
    # A pass of BATCH charges outlasts the service's wait for its loops at the stop, after which the
    # gateway is closed: past the stop, nothing new goes to Stripe.
    async def present_reserved(item: charging.Reserved) -> int:
        if stop.is_set():
            return 0
        await charging.present_reserved(gateway, item, record=outcomes.record)
        return 1

    async def first_charge(request: PaymentRequest) -> int:
        if stop.is_set():
            return 0
        _, created = await charging.start(factory, gateway, request, now=now)
        return created

    semaphore = asyncio.Semaphore(concurrency)
    presenting: list[asyncio.Task] = []
    alone: list[PaymentRequest] = []
    try:
        for start in range(0, len(due), RESERVED_TOGETHER):
            if stop.is_set():
                break
            reserved, left = await charging.reserve_many(factory, due[start:start + RESERVED_TOGETHER], now=now)
            alone += left
            lot = [asyncio.create_task(_limited(semaphore, partial(present_reserved, item), what="first_charge",
                                                id=item.idempotency_key)) for item in reserved]
            presenting += lot
            # The next lot is reserved while the last of this one are at Stripe (they start in order), so
            # Stripe does not wait on it, and a charge is not reserved long before its turn.
            if len(lot) > 2 * concurrency:
                await asyncio.wait(lot[:-2 * concurrency])
    finally:
        await asyncio.gather(*presenting)
    # A reserved charge counts as presented even when Stripe did not answer: it is presented again later.
    presented = len(presenting) + sum(await _at_most(concurrency, alone, first_charge, what="first_charge"))

    async def retries() -> int:
        # Claimed one at a time, so concurrent workers (and schedulers) never take the same payment.
        done = 0
        while not stop.is_set() and (payment_id := await _claim_retry(factory, now)) is not None:
            done += await _logged(charging.retry(factory, gateway, payment_id, now=now, claimed=True,
                                                 record=outcomes.record),
                                  what="retry", id=str(payment_id)) is not None
        return done

    if retries_due:
        presented += sum(await asyncio.gather(*(retries() for _ in range(concurrency))))

    async def present_again(attempt_id: uuid.UUID) -> int:
        if stop.is_set():
            return 0
        await charging.present(factory, gateway, attempt_id, now=now, record=outcomes.record)
        return 0

    await _at_most(concurrency, stale, present_again, what="stale_attempt")
    return presented


class OutcomeGroups:
    """Stripe's answers to a pass's charges, recorded a group at a time: one transaction for the answers
    that came within `LINGER` of the first (at most `size` of them), instead of a transaction each.

    A charge hands its answer over and frees its place for the next charge; the pass waits for every
    answer to be written (`written`) before it ends. A group that fails as a whole (one answer's error, a
    deadlock) is recorded again one answer at a time, so one cannot keep the others unrecorded. An answer
    never recorded (an error, a crash) leaves its attempt `created`, to be presented again with the same
    key, which Stripe answers as it did the first time."""

    LINGER = 0.05

    def __init__(self, factory: async_sessionmaker[AsyncSession], *, now: datetime, size: int):
        self._factory, self._now, self._size = factory, now, size
        self._waiting: list[charging.Answer] = []
        self._full = asyncio.Event()  # a group's worth waits, or the pass is done: write without lingering
        self._done = False
        self._writer: asyncio.Task | None = None

    async def record(self, answer: charging.Answer) -> None:
        self._waiting.append(answer)
        if len(self._waiting) >= self._size:
            self._full.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def written(self) -> None:
        """Wait until every answer handed over is written (or logged as not); none may come after."""
        self._done = True
        self._full.set()
        if self._writer is not None:
            await self._writer

    async def _write(self) -> None:
        while self._waiting:
            if len(self._waiting) < self._size and not self._done:
                self._full.clear()
                try:
                    await asyncio.wait_for(self._full.wait(), self.LINGER)
                except TimeoutError:
                    pass
            group, self._waiting = self._waiting[:self._size], self._waiting[self._size:]
            if not await self._committed(group) and len(group) > 1:
                for answer in group:
                    await self._committed([answer])

    async def _committed(self, answers: list[charging.Answer]) -> bool:
        """Whether the answers were recorded, in one transaction; an error is logged."""
        try:
            async with self._factory() as session, session.begin():
                await charging.record_outcomes(session, answers, now=self._now)
        except Exception:
            log.exception("payments.scheduler.outcome_failed", attempts=[str(a.attempt_id) for a in answers])
            return False
        return True


async def _retry_due(session: AsyncSession, now: datetime) -> bool:
    return await session.scalar(select(Payment.id).where(
        Payment.status == "failed", Payment.next_attempt_at <= now).limit(1)) is not None


async def _at_most(limit: int, items: Iterable[T], work: Callable[[T], Awaitable[int]], *,
                   what: str) -> list[int]:
    semaphore = asyncio.Semaphore(limit)
    return await asyncio.gather(*(_limited(semaphore, partial(work, item), what=what,
                                           id=str(getattr(item, "idempotency_key", item))) for item in items))


async def _limited(semaphore: asyncio.Semaphore, work: Callable[[], Awaitable[int]], *, what: str, id: str) -> int:
    async with semaphore:
        return await _logged(work(), what=what, id=id) or 0


async def _logged(call: Awaitable, *, what: str, id: str):
    """One charge's error is logged and skipped, so it holds back neither the pass nor the others."""
    try:
        return await call
    except Exception:
        log.exception("payments.scheduler.charge_failed", what=what, id=id)
        return None


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
    from payloop_payments.api import clock_of, gateway_of, scheduler_wake

    # The scheduler's own connections, one per concurrent charge (each holds at most one at a time), so
    # however many charges are in flight, the API and the consumer keep the whole of the service's pool.
    concurrency = settings.payments_scheduler_concurrency
    engine = make_engine(app.state.engine.url, pool_size=concurrency, max_overflow=0)
    factory = make_session_factory(engine)
    wake = scheduler_wake(app)
    try:
        while not stop.is_set():
            wake.clear()  # what set it before this pass, this pass sees
            presented = 0
            try:
                presented = await run_once(factory, gateway_of(app), now=clock_of(app).now(),
                                           concurrency=concurrency, stop=stop)
            except Exception:
                log.exception("payments.scheduler.pass_failed")
            if presented >= BATCH:
                continue  # a full batch: more is probably due, and Stripe's pace already spaces the requests
            await _first_of(stop, wake, timeout=settings.payments_scheduler_interval_s)
    finally:
        await engine.dispose()


async def _first_of(*events: asyncio.Event, timeout: float) -> None:
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
