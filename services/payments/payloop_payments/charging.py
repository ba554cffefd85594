"""The life of a payment: reserve, present to Stripe, record the outcome, retry or give up.

Each payment attempt is committed (with its payment, allocations and `payment.initiated`) before
Stripe is called, and its id is Stripe's Idempotency-Key; the processor's ids are stored with the
outcome in a second transaction. A crash between the two leaves an attempt in `created`, which the
scheduler presents again with the same key, so nothing is ever charged twice. The scheduler makes the
same two steps for many charges at once: their attempts reserved in one transaction (`reserve_many`),
all committed before any is presented, and their answers recorded several to a transaction
(`record_outcomes`).
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop import outbox
from payloop.events import Envelope, new_event
from payloop.ids import uuid7
from payloop.problems import NotFound, Problem
from payloop.tenant_replica import load_profile

from payloop_payments import repository
from payloop_payments.domain.allocation import AllocationError, allocate, apply_credit
from payloop_payments.domain.retry_policy import Failure, Outcome, PastAttempt, RetryPolicy, decide
from payloop_payments.models import (
    AutopayEnrollment, Client, Invoice, Payment, PaymentAllocation, PaymentAttempt, PaymentMethod,
)
from payloop_payments.stripe_gateway import ChargeResult, ProcessorUnavailable, StripeGateway

log = structlog.get_logger(__name__)

PRODUCER = "payments"
Origin = Literal["autopay", "checkout", "installment", "manual"]


@dataclass(frozen=True)
class PaymentRequest:
    tenant_id: str
    client_id: str
    payment_method_id: uuid.UUID
    idempotency_key: str
    origin: Origin
    client_initiated: bool
    amount_minor: int | None = None          # None: the open balance of `invoice_ids` (or all)
    allocations: dict[str, int] | None = None  # chosen split; None: oldest due first
    invoice_ids: list[str] | None = None
    installment_part_id: uuid.UUID | None = None
    use_credit: bool = False  # apply the client's credit before charging (auto-pay, full balance)
    surcharge_minor: int = 0  # charged on top of amount_minor, allocated to no invoice (card convenience fee)

    def fingerprint(self) -> str:
        fields = [self.client_id, str(self.payment_method_id), self.amount_minor, self.allocations,
                  sorted(self.invoice_ids or [])]
        if self.surcharge_minor:  # only then: fingerprints of payments without one stay as they were
            fields.append(self.surcharge_minor)
        body = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()


def method_summary(method: PaymentMethod) -> dict:
    return {"type": method.type, "brand": method.brand, "last4": method.last4}


async def tenant_account(session: AsyncSession, tenant_id: str) -> tuple[str | None, RetryPolicy]:
    """The tenant's Stripe Connect account (if any) and retry policy, from the tenant replica."""
    profile = await load_profile(session, tenant_id)
    settings = profile.settings if profile else {}
    return settings.get("stripe_account_id"), RetryPolicy.from_settings(settings)


async def payment_event(session: AsyncSession, type: str, payment: Payment, *, attempt: int | None = None,
                        method: PaymentMethod | None = None, allocations: list[PaymentAllocation] | None = None,
                        **extra) -> None:
    """`method` and `allocations`: the payment's, when the caller holds them already (saves their queries)."""
    if method is None:
        method = await session.get(PaymentMethod, payment.payment_method_id)
    if allocations is None:
        allocations = await repository.allocations_of(session, payment.id)
    await outbox.publish(session, payment_envelope(type, payment, attempt=attempt, method=method,
                                                   allocations=allocations, **extra))


def payment_envelope(type: str, payment: Payment, *, attempt: int | None, method: PaymentMethod,
                     allocations: list[PaymentAllocation], **extra) -> Envelope:
    data = {
        "payment_id": str(payment.id), "method": method_summary(method), "amount_minor": payment.amount_minor,
        "currency": payment.currency, "fee_minor": payment.fee_minor, "surcharge_minor": payment.surcharge_minor,
        "allocations": [{"invoice_id": a.invoice_id, "amount_minor": a.amount_minor} for a in allocations],
        "credit_minor": payment.credit_minor, "attempt": attempt or payment.attempt_count,
        "processor": {"name": "stripe", "payment_intent_id": payment.stripe_payment_intent_id,
                      "charge_id": payment.stripe_charge_id},
        **extra,
    }
    return new_event(type, tenant_id=payment.tenant_id, client_id=payment.client_id, producer=PRODUCER, data=data)


async def start(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, request: PaymentRequest,
                *, now: datetime | None = None) -> tuple[uuid.UUID | None, bool]:
    """Create the payment (or find the one this idempotency key made) and present its first attempt.

    Returns (payment id, created now); no payment when client credit covered everything. A repeated
    key with a different request is refused.
    """
    now = now or datetime.now(UTC)
    try:
        async with factory() as session, session.begin():
            # The client's row lock serialises its reservations: a concurrent duplicate (a double
            # click, a second scheduler) waits here and then finds the first one's payment, instead
            # of finding the invoices already pending and failing to allocate.
            client = await repository.client(session, request.tenant_id, request.client_id, lock=True)
            if client is None:
                raise NotFound("client")
            existing = await repository.payment_by_key(session, request.tenant_id, request.idempotency_key)
            if existing is not None:
                _same_request(existing, request)
                return existing.id, False
            reserved = await _reserve(session, client, request, now)
            if reserved is None:
                return None, False
            account, _ = await tenant_account(session, request.tenant_id)
    except IntegrityError:
        # Another request or scheduler inserted the same key first: theirs is the payment.
        async with factory() as session:
            existing = await repository.payment_by_key(session, request.tenant_id, request.idempotency_key)
            if existing is None:
                raise
            _same_request(existing, request)
            return existing.id, False
    # The rows just committed are what present() would read back: they go to Stripe as they are.
    await _present(gateway, reserved, client, account, record=record_alone(factory, now))
    return reserved.payment.id, True


def _same_request(existing: Payment, request: PaymentRequest) -> None:
    if existing.request_fingerprint and existing.request_fingerprint != request.fingerprint():
        raise Problem(422, "Idempotency-Key reused",
                      "this Idempotency-Key was used for a different payment request")


@dataclass(frozen=True)
class AttemptRows:
    """An attempt with its payment, method and allocations (None: not read), as a transaction left them.

    A payment's allocations never change once made (only their refunded amount), nor does an attempt's method."""
    attempt: PaymentAttempt
    payment: Payment
    method: PaymentMethod
    allocations: list[PaymentAllocation] | None = None


@dataclass(frozen=True)
class Reservation:
    """A first attempt with its payment and allocations, not yet written, and its `payment.initiated`."""
    rows: AttemptRows
    initiated: Envelope


@dataclass(frozen=True)
class Reserved:
    """A first attempt `reserve_many` committed, with what presenting it takes."""
    rows: AttemptRows
    client: Client
    account: str | None

    @property
    def idempotency_key(self) -> str:
        return self.rows.payment.idempotency_key


async def _reserve(session: AsyncSession, client: Client, request: PaymentRequest,
                   now: datetime) -> AttemptRows | None:
    method = await repository.method(session, request.tenant_id, request.payment_method_id)
    invoices = await repository.invoices_of(session, request.tenant_id, request.client_id,
                                            invoice_ids=_wanted(request), lock=True)
    reservation = await _reservation(session, client, method, invoices, request, now)
    if reservation is None:
        return None
    await _write(session, [reservation])
    return reservation.rows


async def reserve_many(factory: async_sessionmaker[AsyncSession], requests: list[PaymentRequest], *,
                       now: datetime) -> tuple[list[Reserved], list[PaymentRequest]]:
    """Reserve the first attempts of many requests (a scheduler pass's due charges) in one transaction.

    The same rows as `start` makes, read and written a statement a table for the lot instead of a
    transaction a charge; committed before any is presented. A request that cannot be made (a method
    no longer usable, nothing left to allocate) is logged and left out; one whose key an earlier pass or
    another scheduler used is left out silently. Returns what was reserved, and the requests to start
    one at a time: those naming no invoices (they pay all the client's), or all of them when the
    transaction failed (a conflicting reservation, a deadlock, or any error one request raised), so one
    conflict or one bad request cannot hold back the rest: alone, each is made or logged and skipped.
    """
    together = [r for r in requests if _wanted(r) is not None]
    alone = [r for r in requests if _wanted(r) is None]
    if not together:
        return [], alone
    try:
        async with factory() as session, session.begin():
            reserved = await _reserve_together(session, together, now)
    except Exception:
        log.warning("payments.reserve.batch_failed", requests=len(together), exc_info=True)
        return [], together + alone
    return reserved, alone


async def _reserve_together(session: AsyncSession, requests: list[PaymentRequest], now: datetime) -> list[Reserved]:
    # Clients locked first, in key order, as `start` locks its one: a second scheduler's batch or a
    # request for one of these clients waits here, then finds the payments this one made.
    clients = await repository.clients(session, {(r.tenant_id, r.client_id) for r in requests}, lock=True)
    taken = await repository.payment_keys(session, {(r.tenant_id, r.idempotency_key) for r in requests})
    methods = await repository.methods(session, {(r.tenant_id, r.payment_method_id) for r in requests})
    invoices = await repository.invoices_by_id(
        session, {(r.tenant_id, invoice_id) for r in requests for invoice_id in _wanted(r)}, lock=True)
    accounts = {tenant_id: (await tenant_account(session, tenant_id))[0]
                for tenant_id in {r.tenant_id for r in requests}}
    made: list[tuple[Reservation, Client]] = []
    for request in requests:
        key = (request.tenant_id, request.idempotency_key)
        if key in taken:
            continue
        taken.add(key)
        client = clients.get((request.tenant_id, request.client_id))
        # As `invoices_of` finds them: the client's own, oldest due first (the allocation order).
        found = (invoices.get((request.tenant_id, invoice_id)) for invoice_id in _wanted(request))
        its_invoices = sorted((i for i in found if i is not None and i.client_id == request.client_id),
                              key=lambda i: (i.due_on, i.invoice_id))
        try:
            if client is None:
                raise NotFound("client")
            undo = _undo_of(client, its_invoices)
            try:
                reservation = await _reservation(session, client, methods.get((request.tenant_id,
                                                                                request.payment_method_id)),
                                                 its_invoices, request, now)
            except Problem:
                undo()  # the credit it applied goes back to the client, as `start`'s rollback would put it
                raise
        except Problem as exc:
            log.warning("payments.reserve.refused", key=request.idempotency_key, problem=exc.title,
                        detail=exc.detail)
            continue
        if reservation is not None:
            made.append((reservation, client))
    await _write(session, [reservation for reservation, _ in made])
    return [Reserved(reservation.rows, client, accounts[client.tenant_id]) for reservation, client in made]


def _wanted(request: PaymentRequest) -> list[str] | None:
    """The invoices a request pays; None: every open invoice of the client."""
    if request.invoice_ids is None and request.allocations is not None:
        return list(request.allocations)
    return request.invoice_ids


def _undo_of(client: Client, invoices: list[Invoice]) -> Callable[[], None]:
    """Puts back what `_reservation` may have changed before it refused a request."""
    credit = client.credit_minor
    amounts = [(invoice, invoice.credited_minor, invoice.pending_minor) for invoice in invoices]

    def undo() -> None:
        client.credit_minor = credit
        for invoice, credited, pending in amounts:
            invoice.credited_minor, invoice.pending_minor = credited, pending
    return undo


async def _reservation(session: AsyncSession, client: Client, method: PaymentMethod | None, invoices: list[Invoice],
                       request: PaymentRequest, now: datetime) -> Reservation | None:
    """The payment, allocations and first attempt of `request` (not yet added to the session), with its
    invoices' pending amounts and the client's credit changed; a Problem when it cannot be made."""
    if method is None or method.client_id != request.client_id:
        raise NotFound("payment method")
    if method.status != "active":
        raise Problem(409, "Payment method unusable", f"the payment method is {method.status}")
    if request.use_credit and request.amount_minor is None:
        _apply_credit(client, invoices)
    open_invoices = [repository.as_open(i) for i in invoices if repository.invoice_open_minor(i) > 0]
    currencies = {i.currency for i in invoices}
    amount = request.amount_minor
    if amount is None:
        amount = sum(i.open_minor for i in open_invoices)
        if amount == 0 and request.use_credit:
            return None  # credit covered it all: nothing to charge
    try:
        result = allocate(amount, open_invoices, request.allocations)
    except AllocationError as exc:
        raise Problem(422, "Cannot allocate payment", str(exc)) from None
    if len(currencies) > 1:
        raise Problem(422, "Mixed currencies", "one payment settles invoices of one currency")
    currency = currencies.pop() if currencies else await _tenant_currency(session, request.tenant_id)
    # Ids given here rather than at the insert, so the allocations and the attempt can name their payment.
    payment = Payment(id=uuid7(), tenant_id=request.tenant_id, client_id=request.client_id,
                      idempotency_key=request.idempotency_key, request_fingerprint=request.fingerprint(),
                      origin=request.origin, payment_method_id=method.id, amount_minor=amount, currency=currency,
                      credit_minor=result.credit_minor, status="pending", attempt_count=1,
                      installment_part_id=request.installment_part_id, fee_minor=0,
                      surcharge_minor=request.surcharge_minor, refunded_minor=0,
                      disputed_minor=0)
    by_id = {i.invoice_id: i for i in invoices}
    allocations = [PaymentAllocation(payment_id=payment.id, invoice_id=part.invoice_id, tenant_id=request.tenant_id,
                                     amount_minor=part.amount_minor, refunded_minor=0)
                   for part in sorted(result.allocations, key=lambda part: part.invoice_id)]
    for allocation in allocations:
        by_id[allocation.invoice_id].pending_minor += allocation.amount_minor
    attempt = PaymentAttempt(id=uuid7(), tenant_id=request.tenant_id, payment_id=payment.id,
                             payment_method_id=method.id, attempt_no=1, client_initiated=request.client_initiated,
                             status="created", created_at=now)
    initiated = payment_envelope("payment.initiated", payment, attempt=1, method=method, allocations=allocations,
                                 origin=request.origin)
    return Reservation(AttemptRows(attempt, payment, method, allocations), initiated)


async def _write(session: AsyncSession, reservations: list[Reservation]) -> None:
    """The payments first (their allocations and attempts refer to them), then the rest and the
    `payment.initiated` events, in the caller's transaction: a statement a table however many."""
    if not reservations:
        return
    session.add_all([r.rows.payment for r in reservations])
    await session.flush()
    session.add_all([row for r in reservations for row in (*r.rows.allocations, r.rows.attempt)])
    await session.flush()
    await outbox.publish_many(session, [r.initiated for r in reservations])


def _apply_credit(client: Client, invoices: list) -> None:
    """Client credit (overpayments, unapplied credit memos) pays the oldest invoices first."""
    for invoice in invoices:
        used, _ = apply_credit(client.credit_minor, repository.invoice_open_minor(invoice))
        invoice.credited_minor += used
        client.credit_minor -= used


async def _tenant_currency(session: AsyncSession, tenant_id: str) -> str:
    profile = await load_profile(session, tenant_id)
    return profile.currency if profile else "USD"


@dataclass(frozen=True)
class Answer:
    """What Stripe answered about one attempt; `known`: the attempt's rows as the caller read them,
    whose method and allocations spare the queries of the `payment.settled` event."""
    tenant_id: str
    attempt_id: uuid.UUID
    result: ChargeResult
    known: AttemptRows | None = None


# How a presented attempt's answer is recorded: in a transaction of its own, or with others (the scheduler).
Record = Callable[[Answer], Awaitable[None]]


def record_alone(factory: async_sessionmaker[AsyncSession], now: datetime | None) -> Record:
    async def record(answer: Answer) -> None:
        async with factory() as session, session.begin():
            await record_outcomes(session, [answer], now=now or datetime.now(UTC))
    return record


async def present(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, attempt_id: uuid.UUID,
                  *, now: datetime | None = None, record: Record | None = None) -> None:
    """Send one attempt to Stripe and record what it answered. Safe to call again for the same attempt."""
    async with factory() as session:
        attempt = await session.get(PaymentAttempt, attempt_id)
        if attempt is None or attempt.status != "created":
            return
        payment = await session.get(Payment, attempt.payment_id)
        method = await session.get(PaymentMethod, attempt.payment_method_id)
        client = await session.get(Client, (payment.tenant_id, payment.client_id))
        account, _ = await tenant_account(session, payment.tenant_id)
    await _present(gateway, AttemptRows(attempt, payment, method), client, account,
                   record=record or record_alone(factory, now))


async def present_reserved(gateway: StripeGateway, reserved: Reserved, *, record: Record) -> None:
    """Send an attempt `reserve_many` committed to Stripe, as it was committed, and record the answer."""
    await _present(gateway, reserved.rows, reserved.client, reserved.account, record=record)


async def _present(gateway: StripeGateway, reserved: AttemptRows, client: Client, account: str | None, *,
                   record: Record) -> None:
    attempt, payment, method = reserved.attempt, reserved.payment, reserved.method
    if not client.stripe_customer_id:
        raise Problem(409, "No processor customer", "the client has no Stripe customer yet")
    try:
        result = await gateway.charge(
            customer_id=client.stripe_customer_id, payment_method_id=method.stripe_payment_method_id,
            method_type=method.type, amount_minor=payment.amount_minor + payment.surcharge_minor,
            currency=payment.currency,
            idempotency_key=f"payloop-attempt-{attempt.id}", off_session=not attempt.client_initiated,
            metadata={"tenant_id": payment.tenant_id, "payment_id": str(payment.id), "attempt_id": str(attempt.id)},
            account=account)
    except ProcessorUnavailable as exc:
        # Outcome unknown: the attempt stays `created` and is presented again with the same key.
        log.warning("payments.charge.processor_unavailable", payment_id=str(payment.id), error=str(exc))
        return
    await record(Answer(payment.tenant_id, attempt.id, result, reserved))


async def record_outcome(session: AsyncSession, tenant_id: str, attempt_id: uuid.UUID, result: ChargeResult, *,
                         now: datetime) -> None:
    """Apply what Stripe said about an attempt (from the API answer or a webhook), once."""
    await record_outcomes(session, [Answer(tenant_id, attempt_id, result)], now=now)


@dataclass
class _Collected:
    """What settled payments move from pending to collected on their invoices, and their events: written
    once for all the answers of a transaction."""
    parts: list[tuple[str, str, int]] = field(default_factory=list)  # (tenant, invoice, amount)
    events: list[Envelope] = field(default_factory=list)


async def record_outcomes(session: AsyncSession, answers: list[Answer], *, now: datetime) -> None:
    """Apply what Stripe said about attempts, each once, in the caller's transaction; their attempts and
    payments locked (in id order) and their invoices and events written a statement for all of them."""
    # populate_existing: a webhook handler may have loaded the attempt before taking the lock, and
    # must see what a concurrent recording (the API answer) committed meanwhile, not its stale copy.
    attempts = {a.id: a for a in await repository.attempts_by_id(
        session, {(answer.tenant_id, answer.attempt_id) for answer in answers}, lock=True)}
    payments = {p.id: p for p in await repository.payments_by_id(
        session, {(a.tenant_id, a.payment_id) for a in attempts.values()}, lock=True)}
    collected = _Collected()
    for answer in answers:
        attempt = attempts.get(answer.attempt_id)
        if attempt is None:
            raise LookupError(f"no attempt {answer.attempt_id} of tenant {answer.tenant_id}")
        await _apply(session, attempt, payments[attempt.payment_id], answer.result, now, answer.known, collected)
    await session.flush()
    await repository.move_pending_to_collected(session, collected.parts)
    await outbox.publish_many(session, collected.events)


async def _apply(session: AsyncSession, attempt: PaymentAttempt, payment: Payment, result: ChargeResult,
                 now: datetime, known: AttemptRows | None, collected: _Collected) -> None:
    if result.payment_intent_id:
        attempt.stripe_payment_intent_id = result.payment_intent_id
        payment.stripe_payment_intent_id = result.payment_intent_id
    if result.charge_id:
        payment.stripe_charge_id = result.charge_id
    late_return = attempt.status == "succeeded" and result.status == "failed"
    if attempt.status in ("succeeded", "failed") and not late_return:
        return  # already applied: a webhook and the API answer both report the same outcome
    if result.status == "processing":
        attempt.status, payment.status = "processing", "processing"
        return
    attempt.completed_at = now
    if result.status == "succeeded":
        await _settle(session, payment, attempt, result, now, known, collected)
    else:
        await _fail(session, payment, attempt, result, now, late_return=late_return)


async def _settle(session: AsyncSession, payment: Payment, attempt: PaymentAttempt, result: ChargeResult,
                  now: datetime, known: AttemptRows | None, collected: _Collected) -> None:
    attempt.status = "succeeded"
    allocations = known.allocations if known and known.allocations is not None else (
        await repository.allocations_of(session, payment.id))
    collected.parts += [(payment.tenant_id, a.invoice_id, a.amount_minor) for a in allocations]
    if payment.credit_minor:
        client = await repository.client(session, payment.tenant_id, payment.client_id, lock=True)
        client.credit_minor += payment.credit_minor
    payment.status, payment.fee_minor, payment.settled_at = "succeeded", result.fee_minor, now
    payment.next_attempt_at, payment.last_decline_code = None, None
    # The attempt's method is the payment's unless a client's retry moved the payment to another since.
    method = known.method if known and known.method.id == payment.payment_method_id else (
        await session.get(PaymentMethod, payment.payment_method_id))
    collected.events.append(payment_envelope("payment.settled", payment, attempt=attempt.attempt_no, method=method,
                                             allocations=allocations, settled_at=now.isoformat()))
    log.info("payments.charge.settled", payment_id=str(payment.id), amount_minor=payment.amount_minor)


async def _fail(session: AsyncSession, payment: Payment, attempt: PaymentAttempt, result: ChargeResult,
                now: datetime, *, late_return: bool) -> None:
    """A decline, or an ACH return after the money looked collected: release it, decide the retry."""
    attempt.status, attempt.decline_code = "failed", result.decline_code
    attempt.failure_message = (result.message or "")[:500] or None
    for allocation in await repository.allocations_of(session, payment.id):
        invoice = await repository.invoice(session, payment.tenant_id, allocation.invoice_id, lock=True)
        if late_return:
            invoice.collected_minor -= allocation.amount_minor
        else:
            invoice.pending_minor -= allocation.amount_minor
    if late_return and payment.credit_minor:
        client = await repository.client(session, payment.tenant_id, payment.client_id, lock=True)
        client.credit_minor = max(0, client.credit_minor - payment.credit_minor)
    method = await session.get(PaymentMethod, payment.payment_method_id, with_for_update=True)
    _, policy = await tenant_account(session, payment.tenant_id)
    decision = decide(await _failure(session, payment, attempt, method, result, now),
                      await _history(session, method, attempt, now), policy)
    payment.status, payment.last_decline_code, payment.settled_at = "failed", result.decline_code, None
    payment.next_attempt_at = decision.next_attempt_at if decision.retryable else None
    if decision.outcome is Outcome.UPDATE_METHOD:
        await set_method_status(session, method, "unusable", decision.reason)
    elif decision.outcome is Outcome.REVOKE_AUTHORIZATION:
        await set_method_status(session, method, "revoked", decision.reason)
        await revoke_autopay(session, payment.tenant_id, payment.client_id, method.id, decision.reason)
    await session.flush()
    await payment_event(session, "payment.failed", payment, attempt=attempt.attempt_no,
                        decline_code=result.decline_code, retryable=decision.retryable,
                        next_attempt_at=payment.next_attempt_at.isoformat() if payment.next_attempt_at else None,
                        outcome=decision.outcome.value, reason=decision.reason, late_return=late_return)
    if late_return:
        # Money the books already hold left again (an ACH return after settlement): to accounting and
        # collections that is a reversal, which the catalogue names payment.disputed ("disputed or returned").
        await payment_event(session, "payment.disputed", payment, attempt=attempt.attempt_no,
                            dispute_id=f"return:{result.charge_id or attempt.id}",
                            disputed_minor=payment.amount_minor, reason=f"returned: {result.decline_code}",
                            status="returned")
    log.info("payments.charge.declined", payment_id=str(payment.id), decline_code=result.decline_code,
             outcome=decision.outcome.value)


async def _failure(session: AsyncSession, payment: Payment, attempt: PaymentAttempt, method: PaymentMethod,
                   result: ChargeResult, now: datetime) -> Failure:
    attempts = await repository.attempts_of(session, payment.id)
    # The client's own try at a payment we are dunning (auto-pay, installment) is judged as if it were
    # not there: the next scheduled retry still comes, and the try used none of the retry budget.
    dunning = payment.origin in ("autopay", "installment")
    return Failure(at=now, payment_id=str(payment.id), method_type=method.type, decline_code=result.decline_code,
                   client_initiated=attempt.client_initiated and not dunning, card_brand=method.brand,
                   first_attempt_at=attempts[0].created_at if attempts else now,
                   is_retry=attempt.attempt_no > 1 and not attempt.client_initiated)


async def _history(session: AsyncSession, method: PaymentMethod, current: PaymentAttempt,
                   now: datetime) -> list[PastAttempt]:
    # 180 days covers the longest rule (Nacha re-presentment window).
    attempts = await repository.attempts_on_method(session, method.id, since=now - timedelta(days=181))
    return [PastAttempt(at=a.created_at, payment_id=str(a.payment_id), client_initiated=a.client_initiated,
                        is_retry=a.attempt_no > 1, decline_code=a.decline_code)
            for a in attempts if a.id != current.id]


async def set_method_status(session: AsyncSession, method: PaymentMethod, status: str, reason: str | None) -> None:
    if method.status == status:
        return
    method.status, method.status_reason = status, reason
    await outbox.publish(session, new_event(
        "payment_method.updated", tenant_id=method.tenant_id, client_id=method.client_id, producer=PRODUCER,
        data={"payment_method_id": str(method.id), "method": method_summary(method), "status": status,
              "reason": reason}))


async def revoke_autopay(session: AsyncSession, tenant_id: str, client_id: str, method_id: uuid.UUID,
                         reason: str) -> None:
    enrollment: AutopayEnrollment | None = await repository.enrollment(session, tenant_id, client_id, lock=True)
    if enrollment is None or not enrollment.active or enrollment.payment_method_id != method_id:
        return
    enrollment.active, enrollment.inactive_reason = False, reason
    await autopay_event(session, enrollment)


async def autopay_event(session: AsyncSession, enrollment: AutopayEnrollment) -> None:
    rule = {"rule": enrollment.rule, "days_before_due": enrollment.days_before_due,
            "cap_minor": enrollment.cap_minor, "excluded_kinds": enrollment.excluded_kinds}
    await outbox.publish(session, new_event(
        "autopay.changed", tenant_id=enrollment.tenant_id, client_id=enrollment.client_id, producer=PRODUCER,
        data={"enrolled": enrollment.active, "payment_method_id": str(enrollment.payment_method_id),
              "rule": rule, "reason": enrollment.inactive_reason}))


async def retry(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, payment_id: uuid.UUID, *,
                now: datetime, claimed: bool = False, record: Record | None = None) -> uuid.UUID | None:
    """Present a failed payment again as a new attempt, if what it pays is still open.

    `claimed`: the scheduler already moved the payment to `retrying` under its row lock. `record`: how
    the answer is recorded (default: in a transaction of its own).
    """
    async with factory() as session, session.begin():
        payment = await session.get(Payment, payment_id, with_for_update=True)
        if payment is None or payment.status != ("retrying" if claimed else "failed"):
            return None
        method = await session.get(PaymentMethod, payment.payment_method_id)
        payment.next_attempt_at = None
        if not await _hold_again(session, payment, method):
            payment.status = "failed"
            log.info("payments.retry.dropped", payment_id=str(payment.id), reason="invoice or method changed")
            return None
        attempt_id = (await _next_attempt(session, payment, method, now, client_initiated=False)).id
    await present(factory, gateway, attempt_id, now=now, record=record)
    return attempt_id


async def retry_now(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, *, tenant_id: str,
                    payment_id: uuid.UUID, payment_method_id: uuid.UUID | None, idempotency_key: str | None,
                    now: datetime) -> uuid.UUID:
    """The client pays a failed payment now, on its method or another saved one.

    A client's attempt is not a dunning retry: it does not count against the retry budget, and if it
    fails the payment's schedule goes on (`_failure`). The same Idempotency-Key retries once.
    """
    async with factory() as session, session.begin():
        payment = await repository.payment(session, tenant_id, payment_id, lock=True)
        if payment is None:
            raise NotFound("payment")
        if idempotency_key and await repository.attempt_by_key(session, payment.id, idempotency_key):
            return payment.id
        if payment.status != "failed":
            raise Problem(409, "Not retryable", f"the payment is {payment.status}")
        method = await repository.method(session, tenant_id, payment_method_id or payment.payment_method_id)
        if method is None or method.client_id != payment.client_id:
            raise NotFound("payment method")
        if method.status != "active":
            raise Problem(409, "Payment method unusable", f"the payment method is {method.status}")
        if not await _hold_again(session, payment, method):
            raise Problem(409, "Nothing to retry", "what this payment paid has changed; start a new payment")
        payment.payment_method_id, payment.next_attempt_at = method.id, None
        attempt_id = (await _next_attempt(session, payment, method, now, client_initiated=True,
                                          idempotency_key=idempotency_key)).id
    await present(factory, gateway, attempt_id, now=now)
    return payment_id


async def _hold_again(session: AsyncSession, payment: Payment, method: PaymentMethod) -> bool:
    """Hold what a failed payment pays as pending again; False when the method or an invoice changed."""
    allocations = await repository.allocations_of(session, payment.id)
    invoices = {a.invoice_id: await repository.invoice(session, payment.tenant_id, a.invoice_id, lock=True)
                for a in allocations}
    if method.status != "active" or any(
            repository.invoice_open_minor(invoices[a.invoice_id]) < a.amount_minor for a in allocations):
        return False
    for allocation in allocations:
        invoices[allocation.invoice_id].pending_minor += allocation.amount_minor
    return True


async def _next_attempt(session: AsyncSession, payment: Payment, method: PaymentMethod, now: datetime, *,
                        client_initiated: bool, idempotency_key: str | None = None) -> PaymentAttempt:
    payment.attempt_count += 1
    payment.status = "pending"
    attempt = PaymentAttempt(tenant_id=payment.tenant_id, payment_id=payment.id, payment_method_id=method.id,
                             attempt_no=payment.attempt_count, client_initiated=client_initiated,
                             idempotency_key=idempotency_key, status="created", created_at=now)
    session.add(attempt)
    await session.flush()
    return attempt
