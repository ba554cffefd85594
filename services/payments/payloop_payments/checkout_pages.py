"""The white-label hosted checkout: server-rendered pages and the two JSON calls the page makes.

Outside `/v1` on purpose: the payer has no bearer token; the signed link in the path is the
credential, checked on every request. Pages carry a strict Content-Security-Policy (scripts only
from us and Stripe.js), no referrer (the link must not leak to other sites) and no caching.
"""
from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import jinja2
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import FileResponse, HTMLResponse

from payloop.problems import PROBLEM_RESPONSES, Problem
from payloop.ratelimit import RateLimiter, rate_limited
from payloop.tenant_replica import load_profile

from payloop_payments import checkout
from payloop_payments.checkout import Brand, LinkRefused
from payloop_payments.models import InstallmentPlan, Payment
from payloop_payments.schemas import (
    CheckoutCardFee, CheckoutPaid, CheckoutPay, CheckoutPlan, CheckoutPlanOut, CheckoutPlanQuote, CheckoutSetup, CheckoutSetupOut,
    ScheduledPartOut,
)
from payloop_payments.settings import PaymentsSettings, payments_settings

router = APIRouter(tags=["checkout"], responses=PROBLEM_RESPONSES)

_HERE = Path(__file__).parent
_TEMPLATES = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"),
                                autoescape=True, undefined=jinja2.StrictUndefined)
_TEMPLATES.filters.update(money=checkout.money, decimal=checkout.decimal_text, long_date=checkout.long_date)
_ASSETS = {"checkout.js": "text/javascript", "checkout.css": "text/css"}

# A payer clicks a few times per payment; a flood of setup or payment calls on one link is abuse.
_LIMITER = RateLimiter(rate=0.5, burst=10)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _security_headers(settings: PaymentsSettings, nonce: str) -> dict[str, str]:
    stripe_js = _origin(settings.js_url())
    stripe_api = _origin(settings.stripe_api_base) if settings.stripe_api_base else "https://api.stripe.com"
    policy = "; ".join((
        "default-src 'none'", f"script-src 'self' {stripe_js}", f"style-src 'self' 'nonce-{nonce}'",
        f"connect-src 'self' {stripe_api}", f"frame-src {stripe_js} https://hooks.stripe.com",
        "img-src 'self' https: data:", "form-action 'self'", "base-uri 'none'", "frame-ancestors 'none'",
    ))
    return {"Content-Security-Policy": policy, "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def _page(template: str, status: int = 200, **context) -> HTMLResponse:
    settings = payments_settings()
    nonce = secrets.token_urlsafe(16)
    html = _TEMPLATES.get_template(template).render(style_nonce=nonce, **context)
    return HTMLResponse(html, status_code=status, headers=_security_headers(settings, nonce))


async def _refused(request: Request, refusal: LinkRefused) -> HTMLResponse:
    brand = Brand.of(None)
    if refusal.tenant_id:
        async with request.app.state.session_factory() as session:
            brand = await checkout.brand_of(session, refusal.tenant_id)
    return _page("link_refused.html", refusal.status, brand=brand, title=refusal.title, detail=refusal.detail)


def _grant(token: str):
    try:
        return checkout.open_link(token, datetime.now(UTC))
    except LinkRefused as refusal:
        raise Problem(refusal.status, refusal.title, refusal.detail) from None


@router.get("/checkout-assets/{name}", include_in_schema=False)
async def asset(name: str) -> FileResponse:
    if name not in _ASSETS:
        raise Problem(404, "Not Found", "no such asset")
    return FileResponse(_HERE / "static" / name, media_type=_ASSETS[name],
                        headers={"Cache-Control": "public, max-age=300"})


@router.get("/checkout/{token}", response_class=HTMLResponse, summary="The hosted checkout page of a signed link")
async def checkout_page(token: str, request: Request) -> HTMLResponse:
    now = datetime.now(UTC)
    try:
        grant = checkout.open_link(token, now)
        async with request.app.state.session_factory() as session:
            view = await checkout.load_view(session, grant, now)
    except LinkRefused as refusal:
        return await _refused(request, refusal)
    settings = payments_settings()
    return _page("checkout.html", view=view, brand=view.brand, token=token, stripe_js_url=settings.js_url(),
                 publishable_key=settings.publishable_key(), plan_parts=checkout.PLAN_PARTS)


@router.post("/checkout/{token}/setup-intents", response_model=CheckoutSetupOut, status_code=201,
             summary="Start saving the payer's card (the page confirms it with Stripe.js)",
             dependencies=[rate_limited(_LIMITER)])
async def checkout_setup(token: str, body: CheckoutSetup, request: Request) -> CheckoutSetupOut:
    from payloop_payments.api import gateway_of

    grant = _grant(token)
    intent_id, secret = await checkout.start_card_setup(request.app.state.session_factory, gateway_of(request.app),
                                                        grant, keep=body.save_method or body.autopay)
    return CheckoutSetupOut(setup_intent_id=intent_id, client_secret=secret)


@router.post("/checkout/{token}/payments", response_model=CheckoutPaid, status_code=201,
             summary="Pay the chosen invoices with the card just saved or a saved bank account (Idempotency-Key required)",
             dependencies=[rate_limited(_LIMITER)])
async def checkout_pay(token: str, body: CheckoutPay, request: Request,
                       idempotency_key: str = Header(alias="Idempotency-Key", max_length=64)) -> CheckoutPaid:
    from payloop_payments.api import gateway_of, scheduler_wake

    grant = _grant(token)
    factory = request.app.state.session_factory
    allocations: dict[str, int] = {}
    for part in body.allocations:
        if part.invoice_id in allocations:
            raise Problem(422, "Invalid request", f"invoice {part.invoice_id} is listed twice")
        allocations[part.invoice_id] = part.amount_minor
    payment_id = await checkout.pay(factory, gateway_of(request.app), grant, link=checkout.link_ref(token),
                                    nonce=idempotency_key, setup_intent_id=body.setup_intent_id,
                                    bank_account_id=body.payment_method_id, allocations=allocations,
                                    keep=body.save_method, autopay=body.autopay, card_fee_shown=body.card_fee_minor)
    if body.autopay:  # an enrolment (committed by now) as through the API: the client's due invoices go now
        scheduler_wake(request.app).set()
    async with factory() as session:
        found = await checkout.receipt(session, grant, payment_id)
    return _paid(token, found.payment)


def _paid(token: str, payment: Payment) -> CheckoutPaid:
    attempt_failed = payment.status == "failed"
    return CheckoutPaid(payment_id=payment.id, status=payment.status, amount_minor=payment.amount_minor,
                        card_fee_minor=payment.surcharge_minor, currency=payment.currency, receipt_url=f"/checkout/{token}/receipts/{payment.id}",
                        message=_decline_message(payment.last_decline_code) if attempt_failed else None)


@router.get("/checkout/{token}/card-fee", response_model=CheckoutCardFee,
            summary="The card convenience fee on an amount, shown before paying")
async def checkout_card_fee(token: str, request: Request,
                            amount_minor: int = Query(ge=1, le=10**11)) -> CheckoutCardFee:
    grant = _grant(token)
    async with request.app.state.session_factory() as session:
        bps = checkout.card_fee_bps(await load_profile(session, grant.tenant_id))
    fee = checkout.card_fee(amount_minor, bps)
    return CheckoutCardFee(amount_minor=amount_minor, card_basis_points=bps, card_fee_minor=fee,
                           card_total_minor=amount_minor + fee)


@router.get("/checkout/{token}/installment-quote", response_model=CheckoutPlanQuote,
            summary="The schedule an installment plan of one invoice would have (dates and exact amounts)")
async def checkout_plan_quote(token: str, request: Request, invoice_id: str = Query(max_length=128),
                              parts: int = Query(ge=2, le=4)) -> CheckoutPlanQuote:
    from payloop_payments.api import clock_of

    grant = _grant(token)
    async with request.app.state.session_factory() as session:
        quote = await checkout.quote_plan(session, grant, invoice_id, parts, clock_of(request.app).now())
    return CheckoutPlanQuote(invoice_id=invoice_id, currency=quote.invoice.currency, total_minor=quote.total_minor,
                             parts=[ScheduledPartOut(seq=seq, due_on=due_on, amount_minor=amount)
                                    for seq, (due_on, amount) in enumerate(quote.parts, start=1)])


@router.post("/checkout/{token}/installment-plans", response_model=CheckoutPlanOut, status_code=201,
             summary="Pay one invoice in parts: the first now, the rest monthly on the same method "
                     "(Idempotency-Key required)",
             dependencies=[rate_limited(_LIMITER)])
async def checkout_plan(token: str, body: CheckoutPlan, request: Request,
                        idempotency_key: str = Header(alias="Idempotency-Key", max_length=64)) -> CheckoutPlanOut:
    from payloop_payments.api import clock_of, gateway_of, plan_out

    grant = _grant(token)
    factory = request.app.state.session_factory
    plan, payment_id = await checkout.start_plan(
        factory, gateway_of(request.app), grant, link=checkout.link_ref(token), nonce=idempotency_key,
        invoice_id=body.invoice_id, parts=body.parts, setup_intent_id=body.setup_intent_id,
        bank_account_id=body.payment_method_id, now=clock_of(request.app).now())
    async with factory() as session:
        shown = await plan_out(session, await session.get(InstallmentPlan, plan.id))
        found = await checkout.receipt(session, grant, payment_id) if payment_id else None
    return CheckoutPlanOut(plan_id=shown.id, status=shown.status, currency=shown.currency, parts=shown.parts,
                           first_payment=_paid(token, found.payment) if found else None)


def _decline_message(code: str | None) -> str:
    # Payers get a plain sentence, never the processor's internals.
    if code in ("insufficient_funds",):
        return "Your card was declined for insufficient funds. Try another card."
    if code in ("expired_card", "incorrect_cvc", "incorrect_number", "invalid_expiry_year"):
        return "Your card details look wrong or the card has expired. Check them or try another card."
    return "Your card was declined. Try another card or contact your bank."


@router.get("/checkout/{token}/receipts/{payment_id}", response_class=HTMLResponse,
            summary="The receipt of a payment made through a checkout link")
async def receipt_page(token: str, payment_id: uuid.UUID, request: Request) -> HTMLResponse:
    try:
        grant = checkout.open_link(token, datetime.now(UTC))
        async with request.app.state.session_factory() as session:
            found = await checkout.receipt(session, grant, payment_id)
    except LinkRefused as refusal:
        return await _refused(request, refusal)
    if found is None:
        return await _refused(request, LinkRefused(404, "Receipt not found",
                                                   "This link has no payment with that reference.", grant.tenant_id))
    return _page("receipt.html", receipt=found, brand=found.brand, token=token)
