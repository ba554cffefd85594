"""The hosted checkout's service layer: open a signed link, show what it grants, take a card payment.

A link is a stateless token (`payloop.checkout_links`) naming a tenant, a client and, optionally, the
invoices it covers (none named: every open invoice of the client). The payer's card is saved with
a SetupIntent confirmed by Stripe.js in the browser, then charged by the same path as API payments
(`charging.start`), client-initiated, so a checkout payment never counts against the dunning budget.
"""
from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop.checkout_links import CheckoutGrant, InvalidCheckoutLink, verify_checkout_token
from payloop.problems import Problem
from payloop.tenant_replica import TenantProfile, load_profile

from payloop_payments import charging, installments, methods, repository
from payloop_payments.charging import PaymentRequest
from payloop_payments.models import Client, InstallmentPlan, Invoice, Payment, PaymentAllocation, PaymentMethod
from payloop_payments.stripe_gateway import StripeGateway

log = structlog.get_logger(__name__)

# Verifying "as of" the epoch checks the signature and claims but not expiry, which we check
# ourselves so that an expired link (410, with the tenant's contact) differs from a forged one (401).
_SIGNATURE_ONLY = datetime(1970, 1, 1, tzinfo=UTC)
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
NONCE = re.compile(r"^[A-Za-z0-9-]{8,64}$")


class LinkRefused(Exception):
    """A checkout link that cannot be used; `tenant_id` is known when the signature held (the
    refusal page then shows the tenant's branding and support contact)."""

    def __init__(self, status: int, title: str, detail: str, tenant_id: str | None = None):
        super().__init__(detail)
        self.status, self.title, self.detail, self.tenant_id = status, title, detail, tenant_id


def open_link(token: str, now: datetime) -> CheckoutGrant:
    try:
        grant = verify_checkout_token(token, now=_SIGNATURE_ONLY)
    except InvalidCheckoutLink:
        raise LinkRefused(401, "This payment link is not valid",
                          "The link may have been mistyped or changed. Use the link from your latest email.") from None
    if now >= grant.expires_at:
        raise LinkRefused(410, "This payment link has expired",
                          "Ask for a new link, or use the one in your latest email.", grant.tenant_id)
    return grant


def link_ref(token: str) -> str:
    """A short stable id of a link, for idempotency keys and logs (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Brand:
    """The tenant's look on its clients' pages, from the tenant replica; unsafe values dropped."""

    name: str
    primary_color: str = "#1f4b99"
    accent_color: str = "#0a7cff"
    logo_url: str | None = None
    sender_name: str | None = None
    support_email: str | None = None
    support_phone: str | None = None
    support_url: str | None = None

    @classmethod
    def of(cls, profile: TenantProfile | None) -> "Brand":
        if profile is None:
            return cls(name="Payments")
        b = profile.branding or {}
        https = lambda v: v if isinstance(v, str) and v.startswith("https://") else None  # noqa: E731
        color = lambda v, d: v if isinstance(v, str) and _COLOR.match(v) else d  # noqa: E731
        return cls(name=b.get("sender_name") or profile.name, primary_color=color(b.get("primary_color"), cls.primary_color),
                   accent_color=color(b.get("accent_color"), cls.accent_color), logo_url=https(b.get("logo_url")),
                   sender_name=b.get("sender_name"), support_email=b.get("support_email"),
                   support_phone=b.get("support_phone"), support_url=https(b.get("support_url")))


@dataclass(frozen=True)
class OpenInvoiceView:
    invoice: Invoice
    open_minor: int
    overdue: bool


@dataclass(frozen=True)
class CheckoutView:
    grant: CheckoutGrant
    brand: Brand
    client: Client
    invoices: list[OpenInvoiceView]
    currency: str
    bank_accounts: list[PaymentMethod]  # saved and usable: the page offers them beside a new card
    card_fee_bps: int  # the tenant's card convenience fee, 0 when it charges none


async def brand_of(session: AsyncSession, tenant_id: str) -> Brand:
    return Brand.of(await load_profile(session, tenant_id))


async def _granted(session: AsyncSession, grant: CheckoutGrant) -> tuple[Client, list[Invoice]]:
    client = await repository.client(session, grant.tenant_id, grant.client_id)
    if client is None:
        raise LinkRefused(404, "Nothing to pay here yet",
                          "We could not find the account this link is for. Please contact us.", grant.tenant_id)
    invoices = await repository.invoices_of(session, grant.tenant_id, grant.client_id,
                                            invoice_ids=list(grant.invoice_ids) or None)
    return client, invoices


async def load_view(session: AsyncSession, grant: CheckoutGrant, now: datetime) -> CheckoutView:
    profile = await load_profile(session, grant.tenant_id)
    client, invoices = await _granted(session, grant)
    today = now.astimezone(ZoneInfo(profile.timezone if profile else "UTC")).date()
    views = [OpenInvoiceView(i, repository.invoice_open_minor(i), i.due_on < today) for i in invoices
             if repository.invoice_open_minor(i) > 0]
    currency = views[0].invoice.currency if views else (profile.currency if profile else "USD")
    return CheckoutView(grant, Brand.of(profile), client, views, currency,
                        await _saved_bank_accounts(session, grant), card_fee_bps(profile))


def card_fee_bps(profile: TenantProfile | None) -> int:
    """The tenant's `convenience_fee.card_basis_points` (validated by the tenants service, 0-400)."""
    fee = (profile.settings if profile else {}).get("convenience_fee") or {}
    bps = fee.get("card_basis_points", 0)
    return bps if isinstance(bps, int) and 0 <= bps <= 400 else 0


def card_fee(amount_minor: int, bps: int) -> int:
    """The convenience fee on a card payment, in minor units, rounded half up to the cent."""
    return (amount_minor * bps + 5_000) // 10_000


async def card_fee_of(session: AsyncSession, tenant_id: str, amount_minor: int) -> int:
    return card_fee(amount_minor, card_fee_bps(await load_profile(session, tenant_id)))


async def _saved_bank_accounts(session: AsyncSession, grant: CheckoutGrant) -> list[PaymentMethod]:
    return [m for m in await repository.methods_of(session, grant.tenant_id, grant.client_id)
            if m.type == "ach" and m.status == "active"]


async def start_card_setup(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway,
                           grant: CheckoutGrant, *, keep: bool) -> tuple[str, str]:
    """A SetupIntent for the link's client that the page confirms with Stripe.js: (id, client secret)."""
    intent_id, secret, _ = await methods.start_setup(factory, gateway, grant.tenant_id, grant.client_id, "card",
                                                     keep=keep)
    return intent_id, secret


async def pay(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, grant: CheckoutGrant, *,
              link: str, nonce: str, setup_intent_id: str | None, bank_account_id: uuid.UUID | None,
              allocations: dict[str, int], keep: bool, autopay: bool, card_fee_shown: int) -> uuid.UUID:
    """Charge the card the page just saved (or a bank account the client saved before) for the chosen
    invoices; one payment per page nonce.

    The nonce comes from the page (one per payment attempt), so a double click or a retried request
    finds the payment the first one made instead of charging again. A card pays the tenant's
    convenience fee on top, which the page showed (`card_fee_shown`); a fee the payer did not see
    (the setting changed meanwhile) is refused rather than charged. A bank account never pays one.
    """
    key = _page_key("checkout", link, nonce)
    async with factory() as session:
        existing = await repository.payment_by_key(session, grant.tenant_id, key)
        if existing is None:
            await _check_allocations(session, grant, allocations)
    if existing is not None:
        if existing.client_id != grant.client_id:
            raise Problem(422, "Idempotency-Key reused", "this key belongs to another payment")
        return existing.id
    method = await _method_for(factory, gateway, grant, setup_intent_id, bank_account_id)
    keep = keep or bank_account_id is not None  # saved before this payment; paying with it does not forget it
    amount = sum(allocations.values())
    fee = 0
    if method.type == "card":
        async with factory() as session:
            fee = await card_fee_of(session, grant.tenant_id, amount)
    if fee != card_fee_shown:
        raise Problem(409, "Convenience fee changed",
                      f"the card convenience fee on this payment is {fee} (minor units); review it and pay again")
    payment_id, created = await charging.start(factory, gateway, PaymentRequest(
        tenant_id=grant.tenant_id, client_id=grant.client_id, payment_method_id=method.id, idempotency_key=key,
        origin="checkout", client_initiated=True, amount_minor=amount, allocations=allocations, surcharge_minor=fee))
    if not created:
        return payment_id  # a concurrent duplicate: the first request finishes what follows
    async with factory() as session, session.begin():
        payment = await session.get(Payment, payment_id)
        collected = payment.status in ("succeeded", "processing")
        if autopay and collected:
            await methods.enroll(session, grant.tenant_id, grant.client_id, payment_method_id=method.id,
                                 rule="on_due", days_before_due=0, cap_minor=None, excluded_kinds=[])
        forget = not (keep or autopay)
        if forget:
            row = await session.get(PaymentMethod, method.id, with_for_update=True)
            await charging.set_method_status(session, row, "detached", "used once at checkout")
        account, _ = await charging.tenant_account(session, grant.tenant_id)
    if forget:
        await gateway.detach_method(method.stripe_payment_method_id, account)
    log.info("payments.checkout.paid", link=link, payment_id=str(payment_id), status=payment.status)
    return payment_id


def _page_key(kind: str, link: str, nonce: str) -> str:
    """Our idempotency key for what one page nonce of one link does."""
    if not NONCE.match(nonce):
        raise Problem(422, "Invalid request", "Idempotency-Key must be 8-64 letters, digits or dashes")
    return f"{kind}:{link}:{nonce}"


async def _method_for(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, grant: CheckoutGrant,
                      setup_intent_id: str | None, bank_account_id: uuid.UUID | None) -> PaymentMethod:
    """The card the page just saved, or one of the bank accounts the page offered."""
    if bank_account_id is None:
        return await methods.save_method(factory, gateway, grant.tenant_id, grant.client_id, setup_intent_id)
    async with factory() as session:
        method = next((m for m in await _saved_bank_accounts(session, grant) if m.id == bank_account_id), None)
    if method is None:
        raise Problem(422, "Unknown bank account", "choose one of the bank accounts this page offers")
    return method


# What a payer may choose alone, without talking to the MSP: a few monthly parts, the first today.
PLAN_PARTS = (2, 3, 4)
PLAN_EVERY_DAYS = 30


@dataclass(frozen=True)
class PlanQuote:
    invoice: Invoice
    total_minor: int
    parts: list[tuple[date, int]]  # (due day, amount); the first is charged when the plan is confirmed


async def quote_plan(session: AsyncSession, grant: CheckoutGrant, invoice_id: str, parts: int,
                     now: datetime) -> PlanQuote:
    """The schedule a plan would have, exactly as `start_plan` would create it."""
    if parts not in PLAN_PARTS:
        raise Problem(422, "Invalid request", f"an installment plan has {', '.join(map(str, PLAN_PARTS))} parts")
    _, invoices = await _granted(session, grant)
    invoice = next((i for i in invoices if i.invoice_id == invoice_id), None)
    if invoice is None:
        raise Problem(422, "Invoice not in this link", f"invoice {invoice_id} cannot be paid with this link")
    balance = repository.invoice_open_minor(invoice)
    today = await installments.tenant_today(session, grant.tenant_id, now)
    return PlanQuote(invoice, balance, installments.schedule(balance, parts, today, PLAN_EVERY_DAYS))


async def start_plan(factory: async_sessionmaker[AsyncSession], gateway: StripeGateway, grant: CheckoutGrant, *,
                     link: str, nonce: str, invoice_id: str, parts: int, setup_intent_id: str | None,
                     bank_account_id: uuid.UUID | None, now: datetime) -> tuple[InstallmentPlan, uuid.UUID | None]:
    """Put one invoice on an installment plan and charge its first part at once; one plan per page nonce.

    The method is kept (the scheduler charges the later parts to it). The first part is charged with
    the part's own idempotency key, the one the scheduler would use, so it is charged once whoever
    gets there first. A declined first part cancels the plan: the payer may try another method.
    """
    key = _page_key("checkout-plan", link, nonce)
    async with factory() as session:
        replay = await installments.plan_by_key(session, grant.tenant_id, key)
        if replay is None:
            await quote_plan(session, grant, invoice_id, parts, now)  # validates the choice before saving a card
    method_id = replay.payment_method_id if replay else \
        (await _method_for(factory, gateway, grant, setup_intent_id, bank_account_id)).id
    async with factory() as session, session.begin():
        plan = await installments.create_plan(
            session, grant.tenant_id, grant.client_id, invoice_id=invoice_id, payment_method_id=method_id,
            parts=parts, first_due_on=None, every_days=PLAN_EVERY_DAYS, idempotency_key=key, now=now)
        first = (await installments.plan_parts(session, plan))[0].part
    payment_id, _ = await charging.start(factory, gateway, PaymentRequest(
        tenant_id=grant.tenant_id, client_id=grant.client_id, payment_method_id=plan.payment_method_id,
        idempotency_key=installments.part_key(first.id), origin="installment", client_initiated=True,
        amount_minor=first.amount_minor, allocations={invoice_id: first.amount_minor},
        installment_part_id=first.id), now=now)
    async with factory() as session, session.begin():
        payment = await session.get(Payment, payment_id)
        if payment.status == "failed":
            row = await session.get(InstallmentPlan, plan.id, with_for_update=True)
            row.status = "cancelled"
    log.info("payments.checkout.plan", link=link, plan_id=str(plan.id), payment_id=str(payment_id),
             status=payment.status)
    return plan, payment_id


async def _check_allocations(session: AsyncSession, grant: CheckoutGrant, allocations: dict[str, int]) -> None:
    """Only invoices the link grants can be paid through it (charging checks the amounts)."""
    if not allocations:
        raise Problem(422, "Nothing to pay", "choose at least one invoice")
    _, invoices = await _granted(session, grant)
    granted = {i.invoice_id for i in invoices}
    outside = sorted(set(allocations) - granted)
    if outside:
        raise Problem(422, "Invoice not in this link", f"invoices {', '.join(outside)} cannot be paid with this link")


@dataclass(frozen=True)
class Receipt:
    payment: Payment
    method: PaymentMethod
    lines: list[tuple[Invoice | None, PaymentAllocation]]
    brand: Brand
    client: Client


async def receipt(session: AsyncSession, grant: CheckoutGrant, payment_id: uuid.UUID) -> Receipt | None:
    """A payment of the link's client, with what it paid; None for anyone else's payment."""
    payment = await repository.payment(session, grant.tenant_id, payment_id)
    if payment is None or payment.client_id != grant.client_id:
        return None
    allocations = await repository.allocations_of(session, payment.id)
    lines = [(await repository.invoice(session, grant.tenant_id, a.invoice_id), a) for a in allocations]
    client, _ = await _granted(session, grant)
    return Receipt(payment, await session.get(PaymentMethod, payment.payment_method_id), lines,
                   await brand_of(session, grant.tenant_id), client)


def money(minor: int, currency: str) -> str:
    """`USD 1,234.56` from integer minor units, without floats (two-decimal currencies)."""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{currency} {sign}{whole:,}.{cents:02d}"


def decimal_text(minor: int) -> str:
    """The value an amount field starts with: `1234.56`."""
    whole, cents = divmod(minor, 100)
    return f"{whole}.{cents:02d}"


def long_date(day: date) -> str:
    return f"{day:%B} {day.day}, {day.year}"
