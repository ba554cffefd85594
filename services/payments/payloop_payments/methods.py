"""Processor customers, saved payment methods (via SetupIntents) and auto-pay enrollment."""
from __future__ import annotations

import uuid
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop import audit, outbox
from payloop.auth import Principal
from payloop.events import new_event
from payloop.problems import NotFound, Problem

from payloop_payments import repository
from payloop_payments.charging import (
    PRODUCER, autopay_event, method_summary, revoke_autopay, set_method_status, tenant_account,
)
from payloop_payments.models import AutopayEnrollment, PaymentMethod
from payloop_payments.stripe_gateway import MethodDetails, StripeGateway


async def ensure_customer(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, tenant_id: str,
                          client_id: str) -> tuple[str, str | None]:
    """The client's Stripe customer id (created once; the idempotency key makes a race harmless)."""
    async with factory() as session:
        client = await repository.client(session, tenant_id, client_id)
        if client is None:
            raise NotFound("client")
        account, _ = await tenant_account(session, tenant_id)
        if client.stripe_customer_id:
            return client.stripe_customer_id, account
        name, email = client.name, (client.billing_emails or [None])[0]
    customer_id = await gateway.create_customer(tenant_id=tenant_id, client_id=client_id, name=name, email=email,
                                                account=account)
    async with factory() as session, session.begin():
        client = await repository.client(session, tenant_id, client_id, lock=True)
        client.stripe_customer_id = client.stripe_customer_id or customer_id
        return client.stripe_customer_id, account


async def start_setup(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, tenant_id: str,
                      client_id: str, method_type: Literal["card", "ach"], *,
                      keep: bool = True) -> tuple[str, str, str]:
    """A SetupIntent the browser confirms with Stripe.js: (setup intent id, client secret, customer id).

    `keep=False` (a checkout payer who does not save the card) asks only for on-session use."""
    customer_id, account = await ensure_customer(factory, gateway, tenant_id, client_id)
    intent_id, secret = await gateway.create_setup_intent(customer_id=customer_id, method_type=method_type,
                                                          account=account,
                                                          usage="off_session" if keep else "on_session")
    return intent_id, secret, customer_id


async def save_method(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, tenant_id: str,
                      client_id: str, setup_intent_id: str) -> PaymentMethod:
    """Store the token a succeeded SetupIntent produced. Saving the same method twice is a no-op."""
    customer_id, account = await ensure_customer(factory, gateway, tenant_id, client_id)
    try:
        details = await gateway.saved_method(setup_intent_id, customer_id=customer_id, account=account)
    except ValueError as exc:
        raise Problem(422, "Setup not completed", str(exc)) from None
    try:
        return await _store_method(factory, tenant_id, client_id, details)
    except IntegrityError:
        # A concurrent request (a double-clicked checkout) stored the same token first.
        return await _store_method(factory, tenant_id, client_id, details)


async def _store_method(factory: async_sessionmaker[AsyncSession], tenant_id: str, client_id: str,
                        details: MethodDetails) -> PaymentMethod:
    async with factory() as session, session.begin():
        for existing in await repository.methods_of(session, tenant_id, client_id):
            if existing.stripe_payment_method_id == details.stripe_payment_method_id:
                return existing
        method = PaymentMethod(tenant_id=tenant_id, client_id=client_id,
                               stripe_payment_method_id=details.stripe_payment_method_id, type=details.type,
                               brand=details.brand, last4=details.last4, status="active")
        session.add(method)
        await session.flush()
        await outbox.publish(session, new_event(
            "payment_method.updated", tenant_id=tenant_id, client_id=client_id, producer=PRODUCER,
            data={"payment_method_id": str(method.id), "method": method_summary(method), "status": "active",
                  "reason": "saved"}))
        return method


async def enroll(session: AsyncSession, tenant_id: str, client_id: str, *, payment_method_id: uuid.UUID,
                 rule: str, days_before_due: int, cap_minor: int | None,
                 excluded_kinds: list[str]) -> AutopayEnrollment:
    """Enrol (or change) a client's auto-pay; a new enrolment is the new authorization after a revoke."""
    method = await repository.method(session, tenant_id, payment_method_id)
    if method is None or method.client_id != client_id:
        raise NotFound("payment method")
    if method.status != "active":
        raise Problem(409, "Payment method unusable", f"the payment method is {method.status}")
    enrollment = await repository.enrollment(session, tenant_id, client_id, lock=True)
    if enrollment is None:
        enrollment = AutopayEnrollment(tenant_id=tenant_id, client_id=client_id)
        session.add(enrollment)
    enrollment.payment_method_id, enrollment.rule = method.id, rule
    enrollment.days_before_due, enrollment.cap_minor = days_before_due, cap_minor
    enrollment.excluded_kinds, enrollment.active, enrollment.inactive_reason = sorted(excluded_kinds), True, None
    await session.flush()
    await autopay_event(session, enrollment)
    return enrollment


async def unenroll(session: AsyncSession, tenant_id: str, client_id: str, reason: str) -> AutopayEnrollment | None:
    """Stop a client's auto-pay: the enrolment stopped, or None when none was active."""
    enrollment = await repository.enrollment(session, tenant_id, client_id, lock=True)
    if enrollment is None or not enrollment.active:
        return None
    enrollment.active, enrollment.inactive_reason = False, reason
    await session.flush()
    await autopay_event(session, enrollment)
    return enrollment


async def detach(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, principal: Principal,
                 client_id: str, payment_method_id: uuid.UUID) -> None:
    """Forget a saved method at a user's request.

    Our row is marked detached (and auto-pay on it revoked) with its audit entry before Stripe is
    called, so no charge can pick the method up while Stripe forgets it."""
    tenant_id = principal.tenant_id
    async with factory() as session, session.begin():
        method = await repository.method(session, tenant_id, payment_method_id, lock=True)
        if method is None or method.client_id != client_id:
            raise NotFound("payment method")
        if method.status == "detached":
            return
        await revoke_autopay(session, tenant_id, client_id, method.id, "payment method removed")
        await set_method_status(session, method, "detached", "removed by user")
        await audit.record(session, principal, "payment_method.detached", ("payment_method", str(method.id)),
                           {"type": method.type, "brand": method.brand, "last4": method.last4},
                           producer=PRODUCER, client_id=client_id)
        account, _ = await tenant_account(session, tenant_id)
        stripe_id = method.stripe_payment_method_id
    await gateway.detach_method(stripe_id, account)
