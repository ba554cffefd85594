"""Stripe webhooks: verified by `Stripe-Signature` (HMAC-SHA256 over `t.payload`, timestamp within
tolerance), stored once by event id, and applied in the same transaction as that record.

A forged or stale delivery gets 401 and changes nothing; a redelivery finds its id stored and is
answered 200 without a second effect. Lookups go through the metadata we set on each
PaymentIntent (`attempt_id`), falling back to the stored processor ids.
"""
from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

import stripe
import structlog
from fastapi import APIRouter, Request
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import outbox
from payloop.events import new_event
from payloop.problems import Problem
from payloop.ratelimit import RateLimiter, rate_limited

from payloop_payments import charging, repository
from payloop_payments.domain.allocation import Allocation, split_refund
from payloop_payments.models import Payment, PaymentAttempt, Refund, StripeEvent
from payloop_payments.settings import payments_settings
from payloop_payments.stripe_gateway import ChargeResult, StripeGateway

log = structlog.get_logger(__name__)

router = APIRouter(tags=["webhooks"])


def verify(payload: bytes, signature: str | None) -> dict[str, Any]:
    settings = payments_settings()
    if not signature:
        raise Problem(401, "Unauthorized", "missing Stripe-Signature")
    try:
        stripe.WebhookSignature.verify_header(payload.decode(), signature, settings.webhook_secret(),
                                              tolerance=settings.stripe_webhook_tolerance_s)
        return json.loads(payload)
    except (stripe.SignatureVerificationError, ValueError, UnicodeDecodeError):
        raise Problem(401, "Unauthorized", "Stripe-Signature does not verify") from None


def flood_guard(request: Request) -> RateLimiter:
    """The app's limiter of Stripe deliveries, sized from settings on first use."""
    if getattr(request.app.state, "stripe_webhook_limiter", None) is None:
        settings = payments_settings()
        request.app.state.stripe_webhook_limiter = RateLimiter(rate=settings.stripe_webhook_rate_per_s,
                                                               burst=settings.stripe_webhook_burst)
    return request.app.state.stripe_webhook_limiter


@router.post("/webhooks/stripe", summary="Stripe webhook endpoint (Stripe-Signature verified)",
             dependencies=[rate_limited(flood_guard)],
             responses={401: {"description": "Signature missing, wrong or too old"},
                        429: {"description": "Too many deliveries from this address; retry after Retry-After"}})
async def receive(request: Request) -> dict:
    from payloop_payments.api import gateway_of

    event = verify(await request.body(), request.headers.get("stripe-signature"))
    prefetched = await _prefetch(gateway_of(request.app), event)
    async with request.app.state.session_factory() as session, session.begin():
        stored = await session.execute(insert(StripeEvent).values(
            id=event["id"], type=event["type"], payload=event,
            tenant_id=_metadata(event).get("tenant_id"),
        ).on_conflict_do_nothing().returning(StripeEvent.id))
        if stored.scalar() is None:
            return {"received": True, "duplicate": True}
        outcome = await apply(session, event, prefetched)
        record = await session.get(StripeEvent, event["id"])
        record.handled_at, record.outcome = datetime.now(UTC), outcome
    return {"received": True, "duplicate": False}


def _object(event: dict[str, Any]) -> dict[str, Any]:
    return event.get("data", {}).get("object", {})


def _metadata(event: dict[str, Any]) -> dict[str, Any]:
    return _object(event).get("metadata") or {}


async def _prefetch(gateway: StripeGateway, event: dict[str, Any]) -> dict[str, Any]:
    """Processor reads a handler needs, done before the database transaction opens."""
    obj = _object(event)
    if event["type"] == "payment_intent.succeeded" and obj.get("latest_charge"):
        charge = obj["latest_charge"]
        return {"fee_minor": await gateway.fee_of_charge(charge if isinstance(charge, str) else charge["id"], None)}
    if event["type"] == "payout.paid":
        return {"transactions": await gateway.payout_transactions(obj["id"], event.get("account"))}
    return {}


async def apply(session: AsyncSession, event: dict[str, Any], prefetched: dict[str, Any]) -> str:
    kind, obj = event["type"], _object(event)
    now = datetime.fromtimestamp(event.get("created") or datetime.now(UTC).timestamp(), UTC)
    if kind.startswith("payment_intent."):
        return await _payment_intent(session, kind, obj, prefetched, now)
    if kind == "charge.failed":
        return await _late_failure(session, obj, now)
    if kind in ("charge.dispute.created", "charge.dispute.funds_withdrawn", "charge.dispute.closed"):
        return await _dispute(session, kind, obj)
    if kind == "payout.paid":
        return await _payout(session, event, obj, prefetched)
    return "ignored"


async def _attempt_for(session: AsyncSession, intent: dict[str, Any]) -> PaymentAttempt | None:
    attempt_id = (intent.get("metadata") or {}).get("attempt_id")
    if attempt_id:
        try:
            return await session.get(PaymentAttempt, uuid.UUID(attempt_id))
        except ValueError:
            return None
    return await repository.attempt_by_intent(session, intent["id"])


async def _payment_intent(session: AsyncSession, kind: str, intent: dict[str, Any], prefetched: dict[str, Any],
                          now: datetime) -> str:
    attempt = await _attempt_for(session, intent)
    if attempt is None:
        return "unknown payment intent"
    charge = intent.get("latest_charge")
    charge_id = charge if isinstance(charge, str) or charge is None else charge.get("id")
    if kind == "payment_intent.succeeded":
        result = ChargeResult("succeeded", intent["id"], charge_id, fee_minor=prefetched.get("fee_minor", 0))
    elif kind == "payment_intent.processing":
        result = ChargeResult("processing", intent["id"], charge_id)
    elif kind == "payment_intent.payment_failed":
        error = intent.get("last_payment_error") or {}
        result = ChargeResult("failed", intent["id"], charge_id,
                              decline_code=error.get("decline_code") or error.get("code"), message=error.get("message"))
    else:
        return "ignored"
    await charging.record_outcome(session, attempt.tenant_id, attempt.id, result, now=now)
    return f"attempt {attempt.id}: {result.status}"


async def _late_failure(session: AsyncSession, charge: dict[str, Any], now: datetime) -> str:
    """An ACH debit returned after it looked collected (R01, R02, R10, ...)."""
    intent_id = charge.get("payment_intent")
    attempt = await repository.attempt_by_intent(session, intent_id) if intent_id else None
    if attempt is None:
        return "unknown charge"
    result = ChargeResult("failed", intent_id, charge.get("id"), decline_code=charge.get("failure_code"),
                          message=charge.get("failure_message"))
    await charging.record_outcome(session, attempt.tenant_id, attempt.id, result, now=now)
    return f"attempt {attempt.id}: returned {charge.get('failure_code')}"


async def _dispute(session: AsyncSession, kind: str, dispute: dict[str, Any]) -> str:
    """Funds withdrawn reopen what the payment paid; a won dispute closes it again."""
    payment = await repository.payment_by_charge(session, dispute.get("charge", ""))
    if payment is None:
        return "unknown charge"
    payment = await session.get(Payment, payment.id, with_for_update=True)
    allocations = await repository.allocations_of(session, payment.id)
    remaining = [Allocation(a.invoice_id, a.amount_minor - a.refunded_minor) for a in allocations
                 if a.amount_minor > a.refunded_minor]
    amount = min(int(dispute["amount"]), payment.amount_minor - payment.refunded_minor)
    # Stripe disputes the charge, which holds the convenience fee on top of the amount; refunds never touch
    # the fee, so what the dispute takes beyond the invoices' share is the fee's, up to the whole fee.
    surcharge = max(0, min(int(dispute["amount"]) - amount, payment.surcharge_minor))
    won = kind == "charge.dispute.closed" and dispute.get("status") == "won"
    opening = kind != "charge.dispute.closed"
    if opening and payment.disputed_minor == 0 and amount > 0:
        _, reversals = split_refund(amount, remaining, 0)
        for part in reversals:
            invoice = await repository.invoice(session, payment.tenant_id, part.invoice_id, lock=True)
            invoice.collected_minor -= part.amount_minor
        payment.disputed_minor, payment.status = amount, "disputed"
    elif won and payment.disputed_minor:
        _, reversals = split_refund(payment.disputed_minor, remaining, 0)
        for part in reversals:
            invoice = await repository.invoice(session, payment.tenant_id, part.invoice_id, lock=True)
            invoice.collected_minor += part.amount_minor
        payment.disputed_minor, payment.status = 0, "succeeded"
    elif not (kind == "charge.dispute.closed"):
        return "dispute already recorded"
    await session.flush()
    await charging.payment_event(session, "payment.disputed", payment, dispute_id=dispute["id"],
                                 disputed_minor=amount, disputed_surcharge_minor=surcharge,
                                 reason=dispute.get("reason"),
                                 status=dispute.get("status", "needs_response"))
    return f"payment {payment.id}: dispute {dispute.get('status')}"


PAYOUT_ITEM_TYPES = {"charge": "charge", "payment": "charge", "refund": "refund", "payment_refund": "refund",
                     "adjustment": "dispute", "dispute": "dispute", "stripe_fee": "fee", "application_fee": "fee"}


async def _payout(session: AsyncSession, event: dict[str, Any], payout: dict[str, Any],
                  prefetched: dict[str, Any]) -> str:
    """`payout.paid` with every balance transaction it settled; the items' nets sum to the payout."""
    items, tenant_id = [], None
    for txn in prefetched.get("transactions", []):
        if txn["type"] == "payout":
            continue
        payment = await _payment_of_source(session, txn.get("source"))
        if payment is not None:
            tenant_id = tenant_id or payment.tenant_id
        items.append({"type": PAYOUT_ITEM_TYPES.get(txn["type"], "adjustment"),
                      "payment_id": str(payment.id) if payment else None, "gross_minor": int(txn["amount"]),
                      "fee_minor": int(txn["fee"]), "net_minor": int(txn["net"])})
    if tenant_id is None:
        return "payout of no known payment"
    await outbox.publish(session, new_event("payout.paid", tenant_id=tenant_id, producer=charging.PRODUCER, data={
        "payout_id": payout["id"], "arrival_date": date.fromtimestamp(int(payout["arrival_date"])).isoformat(),
        "amount_minor": int(payout["amount"]), "currency": payout["currency"].upper(), "items": items,
    }))
    return f"payout {payout['id']}: {len(items)} items"


async def _payment_of_source(session: AsyncSession, source: Any) -> Payment | None:
    source_id = source if isinstance(source, str) else (source or {}).get("id")
    if not source_id:
        return None
    if source_id.startswith("re_"):
        refund = await session.scalar(select(Refund).where(Refund.stripe_refund_id == source_id))
        return await session.get(Payment, refund.payment_id) if refund else None
    if source_id.startswith("ch_") or source_id.startswith("py_"):
        return await repository.payment_by_charge(session, source_id)
    return None
