"""The payments API for frontend teams: invoices as payments sees them, methods, auto-pay,
payments with allocations and attempts, refunds, installment plans. POSTs that move money honour `Idempotency-Key`."""
from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal, require
from payloop.clock import AdjustableClock, Clock, clock_router
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES, NotFound
from payloop.tenant_replica import load_profile

from payloop_payments import charging, installments, methods, refunds, repository
from payloop_payments.charging import PRODUCER, PaymentRequest
from payloop_payments.models import InstallmentPlan
from payloop_payments.schemas import (
    AllocationOut, AttemptOut, AutopayOut, AutopayWrite, InstallmentPartOut, InstallmentPlanCreate, InstallmentPlanOut,
    InvoiceOut, PaymentCreate, PaymentMethodCreate, PaymentMethodOut, PaymentOut, PaymentPage, RefundCreate, RefundOut,
    RetryCreate, SetupIntentCreate, SetupIntentOut,
)
from payloop_payments.settings import payments_settings
from payloop_payments.stripe_gateway import StripeGateway

router = APIRouter(prefix="/v1", tags=["payments"], responses=PROBLEM_RESPONSES)

IdempotencyKey = Header(None, alias="Idempotency-Key", max_length=200,
                        description="Repeat a request with the same key to get the first answer, never a second charge")


def gateway_of(app: FastAPI) -> StripeGateway:
    """One Stripe adapter per app, made on first use from the settings."""
    if getattr(app.state, "gateway", None) is None:
        app.state.gateway = StripeGateway(payments_settings())
    return app.state.gateway


async def close_gateway(app: FastAPI) -> None:
    """At the service's stop, when nothing uses the gateway any more: close its connections to Stripe."""
    if getattr(app.state, "gateway", None) is not None:
        await app.state.gateway.close()


def scheduler_wake(app: FastAPI) -> asyncio.Event:
    """Set when something may have made charges due (an enrolment): the scheduler's next pass starts
    then rather than at its interval."""
    if getattr(app.state, "scheduler_wake", None) is None:
        app.state.scheduler_wake = asyncio.Event()
    return app.state.scheduler_wake


def clock_of(app: FastAPI) -> Clock:
    """The service's clock (what the scheduler and the API take as now), made on first use."""
    if getattr(app.state, "clock", None) is None:
        settings = payments_settings()
        app.state.clock = AdjustableClock.starting(settings.payments_clock_start, settings.payments_clock_speed)
    return app.state.clock


async def _known_tenant(request: Request, principal: Principal) -> None:
    """Only a tenant this service has heard of (by tenant.updated) may read or move its clock."""
    async with request.app.state.session_factory() as session:
        if await load_profile(session, principal.tenant_id) is None:
            raise NotFound("tenant")


# Before `router`, whose /v1/payments/{payment_id} would otherwise take /v1/payments/clock.
clock_routes = clock_router("/v1/payments", lambda request: clock_of(request.app), tag="payments",
                            known_tenant=_known_tenant)


async def _known_client(session: AsyncSession, tenant_id: str, client_id: str) -> None:
    """Client-scoped routes answer 404 for a client this tenant does not have (or another tenant's)."""
    if await repository.client(session, tenant_id, client_id) is None:
        raise NotFound("client")


def _key(given: str | None) -> str:
    # Without a key the request is not deduplicated, but the processor call still carries our ids.
    return f"api:{given}" if given else f"api-unkeyed:{uuid.uuid4()}"


@router.get("/clients/{client_id}/invoices", response_model=list[InvoiceOut], summary="A client's invoices and what is open")
async def list_invoices(client_id: str, principal: Principal = require("ar:read"),
                        session: AsyncSession = Depends(db_session)) -> list[InvoiceOut]:
    await _known_client(session, principal.tenant_id, client_id)
    return [InvoiceOut(**{c: getattr(i, c) for c in InvoiceOut.model_fields if c != "open_minor"},
                       open_minor=repository.invoice_open_minor(i))
            for i in await repository.invoices_of(session, principal.tenant_id, client_id)]


@router.post("/clients/{client_id}/setup-intents", response_model=SetupIntentOut, status_code=201,
             summary="Start saving a card or bank account (confirm the client secret with Stripe.js)")
async def create_setup_intent(client_id: str, body: SetupIntentCreate, request: Request,
                              principal: Principal = require("payments:write")) -> SetupIntentOut:
    intent_id, secret, customer = await methods.start_setup(request.app.state.session_factory,
                                                            gateway_of(request.app), principal.tenant_id,
                                                            client_id, body.type)
    return SetupIntentOut(setup_intent_id=intent_id, client_secret=secret, customer_id=customer)


@router.post("/clients/{client_id}/payment-methods", response_model=PaymentMethodOut, status_code=201,
             summary="Store the method a confirmed SetupIntent saved")
async def save_payment_method(client_id: str, body: PaymentMethodCreate, request: Request,
                              principal: Principal = require("payments:write")) -> PaymentMethodOut:
    method = await methods.save_method(request.app.state.session_factory, gateway_of(request.app),
                                       principal.tenant_id, client_id, body.setup_intent_id)
    return PaymentMethodOut.model_validate(method)


@router.get("/clients/{client_id}/payment-methods", response_model=list[PaymentMethodOut], summary="A client's saved methods")
async def list_payment_methods(client_id: str, principal: Principal = require("ar:read"),
                               session: AsyncSession = Depends(db_session)) -> list[PaymentMethodOut]:
    await _known_client(session, principal.tenant_id, client_id)
    return [PaymentMethodOut.model_validate(m)
            for m in await repository.methods_of(session, principal.tenant_id, client_id)]


@router.delete("/clients/{client_id}/payment-methods/{payment_method_id}", status_code=204,
               summary="Remove a saved method (auto-pay on it stops; Stripe forgets it)")
async def delete_payment_method(client_id: str, payment_method_id: uuid.UUID, request: Request,
                                principal: Principal = require("payments:write")) -> None:
    await methods.detach(request.app.state.session_factory, gateway_of(request.app), principal, client_id,
                         payment_method_id)


@router.put("/clients/{client_id}/autopay", response_model=AutopayOut, summary="Enrol a client in auto-pay or change the rule")
async def put_autopay(client_id: str, body: AutopayWrite, request: Request,
                      principal: Principal = require("payments:write"),
                      session: AsyncSession = Depends(db_session)) -> AutopayOut:
    enrollment = await methods.enroll(session, principal.tenant_id, client_id, **body.model_dump())
    await audit.record(session, principal, "autopay.enrolled", ("client", client_id),
                       body.model_dump(mode="json"), producer=PRODUCER, client_id=client_id)
    enrolled = AutopayOut.model_validate(enrollment)
    await session.commit()  # before the wake: the pass it starts must see the enrolment
    scheduler_wake(request.app).set()  # the client's invoices already due are charged now, not at the next pass
    return enrolled


@router.get("/clients/{client_id}/autopay", response_model=AutopayOut, summary="A client's auto-pay enrolment")
async def get_autopay(client_id: str, principal: Principal = require("ar:read"),
                      session: AsyncSession = Depends(db_session)) -> AutopayOut:
    enrollment = await repository.enrollment(session, principal.tenant_id, client_id)
    if enrollment is None:
        raise NotFound("auto-pay enrolment")
    return AutopayOut.model_validate(enrollment)


@router.delete("/clients/{client_id}/autopay", status_code=204, summary="Stop auto-pay for a client")
async def delete_autopay(client_id: str, principal: Principal = require("payments:write"),
                         session: AsyncSession = Depends(db_session)) -> None:
    await _known_client(session, principal.tenant_id, client_id)
    enrollment = await methods.unenroll(session, principal.tenant_id, client_id, "cancelled by user")
    if enrollment is not None:
        await audit.record(session, principal, "autopay.cancelled", ("client", client_id),
                           {"payment_method_id": str(enrollment.payment_method_id)}, producer=PRODUCER,
                           client_id=client_id)


@router.post("/payments", response_model=PaymentOut, status_code=201,
             summary="Charge a saved method and allocate the payment to invoices")
async def create_payment(body: PaymentCreate, request: Request, idempotency_key: str | None = IdempotencyKey,
                         principal: Principal = require("payments:write")) -> PaymentOut:
    payment_id, _ = await charging.start(request.app.state.session_factory, gateway_of(request.app), PaymentRequest(
        tenant_id=principal.tenant_id, client_id=body.client_id, payment_method_id=body.payment_method_id,
        idempotency_key=_key(idempotency_key), origin="manual", client_initiated=True,
        amount_minor=body.amount_minor, invoice_ids=body.invoice_ids,
        allocations={a.invoice_id: a.amount_minor for a in body.allocations} if body.allocations else None),
        now=clock_of(request.app).now())
    async with request.app.state.session_factory() as session:
        return await payment_out(session, principal.tenant_id, payment_id)


@router.get("/payments", response_model=PaymentPage, summary="Payments, newest last, cursor-paginated")
async def list_payments(client_id: str | None = None, cursor: uuid.UUID | None = None,
                        limit: int = Query(50, ge=1, le=200), principal: Principal = require("ar:read"),
                        session: AsyncSession = Depends(db_session)) -> PaymentPage:
    rows = await repository.payments_of(session, principal.tenant_id, client_id=client_id, after=cursor,
                                        limit=limit + 1)
    items = [await payment_out(session, principal.tenant_id, p.id) for p in rows[:limit]]
    return PaymentPage(items=items, next_cursor=str(rows[limit - 1].id) if len(rows) > limit else None)


@router.get("/payments/{payment_id}", response_model=PaymentOut, summary="One payment with allocations and attempts")
async def get_payment(payment_id: uuid.UUID, principal: Principal = require("ar:read"),
                      session: AsyncSession = Depends(db_session)) -> PaymentOut:
    return await payment_out(session, principal.tenant_id, payment_id)


@router.post("/payments/{payment_id}/retry", response_model=PaymentOut,
             summary="Retry a failed payment now, at the client's request",
             description="A client's retry is not a dunning retry: it uses none of the retry budget, and if it "
                         "fails the scheduled retries go on. The same Idempotency-Key retries once.")
async def retry_payment(payment_id: uuid.UUID, request: Request, body: RetryCreate | None = None,
                        idempotency_key: str | None = IdempotencyKey,
                        principal: Principal = require("payments:write")) -> PaymentOut:
    await charging.retry_now(request.app.state.session_factory, gateway_of(request.app),
                             tenant_id=principal.tenant_id, payment_id=payment_id,
                             payment_method_id=body.payment_method_id if body else None,
                             idempotency_key=idempotency_key, now=clock_of(request.app).now())
    async with request.app.state.session_factory() as session:
        return await payment_out(session, principal.tenant_id, payment_id)


@router.post("/payments/{payment_id}/refunds", response_model=RefundOut, status_code=201,
             summary="Refund a payment in full or in part")
async def create_refund(payment_id: uuid.UUID, body: RefundCreate, request: Request,
                        idempotency_key: str | None = IdempotencyKey,
                        principal: Principal = require("payments:write")) -> RefundOut:
    row = await refunds.refund(request.app.state.session_factory, gateway_of(request.app),
                               principal=principal, payment_id=payment_id, amount_minor=body.amount_minor,
                               reason=body.reason, idempotency_key=_key(idempotency_key))
    return RefundOut.model_validate(row)


async def payment_out(session: AsyncSession, tenant_id: str, payment_id: uuid.UUID) -> PaymentOut:
    payment = await repository.payment(session, tenant_id, payment_id)
    if payment is None:
        raise NotFound("payment")
    out = PaymentOut.model_validate(payment)
    out.allocations = [AllocationOut.model_validate(a) for a in await repository.allocations_of(session, payment.id)]
    out.attempts = [AttemptOut.model_validate(a) for a in await repository.attempts_of(session, payment.id)]
    return out


@router.post("/clients/{client_id}/installment-plans", response_model=InstallmentPlanOut, status_code=201,
             summary="Split an invoice's open balance into scheduled parts on a stored method")
async def create_installment_plan(client_id: str, body: InstallmentPlanCreate, request: Request,
                                  idempotency_key: str | None = IdempotencyKey,
                                  principal: Principal = require("payments:write"),
                                  session: AsyncSession = Depends(db_session)) -> InstallmentPlanOut:
    plan = await installments.create_plan(session, principal.tenant_id, client_id, idempotency_key=_key(idempotency_key),
                                          now=clock_of(request.app).now(), **body.model_dump())
    return await plan_out(session, plan)


@router.get("/clients/{client_id}/installment-plans", response_model=list[InstallmentPlanOut],
            summary="A client's installment plans with each part's schedule and status")
async def list_installment_plans(client_id: str, principal: Principal = require("ar:read"),
                                 session: AsyncSession = Depends(db_session)) -> list[InstallmentPlanOut]:
    await _known_client(session, principal.tenant_id, client_id)
    return [await plan_out(session, p) for p in await installments.plans_of(session, principal.tenant_id, client_id)]


@router.get("/installment-plans/{plan_id}", response_model=InstallmentPlanOut, summary="One installment plan")
async def get_installment_plan(plan_id: uuid.UUID, principal: Principal = require("ar:read"),
                               session: AsyncSession = Depends(db_session)) -> InstallmentPlanOut:
    plan = await installments.plan(session, principal.tenant_id, plan_id)
    if plan is None:
        raise NotFound("installment plan")
    return await plan_out(session, plan)


async def plan_out(session: AsyncSession, plan: InstallmentPlan) -> InstallmentPlanOut:
    parts = [InstallmentPartOut(seq=s.part.seq, due_on=s.part.due_on, amount_minor=s.part.amount_minor,
                                status=s.status, payment_id=s.payment.id if s.payment else None)
             for s in await installments.plan_parts(session, plan)]
    return InstallmentPlanOut(id=plan.id, client_id=plan.client_id, invoice_id=plan.invoice_id,
                              payment_method_id=plan.payment_method_id, currency=plan.currency,
                              total_minor=plan.total_minor, status=plan.status, created_at=plan.created_at,
                              parts=parts)
