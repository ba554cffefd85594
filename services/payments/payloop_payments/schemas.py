"""Request and response models of the payments API. Money is `*_minor: int`."""
from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Minor = Field(strict=True, ge=0)


class InvoiceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    invoice_id: str
    number: str
    currency: str
    issued_on: date
    due_on: date
    status: str
    total_minor: int
    open_minor: int
    lines: list[dict[str, Any]]
    agreement: dict[str, Any] | None


class SetupIntentCreate(BaseModel):
    type: Literal["card", "ach"] = "card"


class SetupIntentOut(BaseModel):
    setup_intent_id: str
    client_secret: str
    customer_id: str


class PaymentMethodCreate(BaseModel):
    setup_intent_id: str = Field(description="A SetupIntent the client confirmed with Stripe.js")


class PaymentMethodOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    client_id: str
    type: str
    brand: str | None
    last4: str | None
    status: str
    status_reason: str | None


class AutopayWrite(BaseModel):
    payment_method_id: uuid.UUID
    rule: Literal["on_issue", "on_due", "days_before_due"] = "on_due"
    days_before_due: int = Field(0, ge=0, le=60)
    cap_minor: int | None = Field(None, strict=True, gt=0)
    excluded_kinds: list[str] = Field(default_factory=list)


class AutopayOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    client_id: str
    payment_method_id: uuid.UUID
    rule: str
    days_before_due: int
    cap_minor: int | None
    excluded_kinds: list[str]
    active: bool
    inactive_reason: str | None


class AllocationIn(BaseModel):
    invoice_id: str
    amount_minor: int = Field(strict=True, gt=0)


class PaymentCreate(BaseModel):
    client_id: str
    payment_method_id: uuid.UUID
    amount_minor: int | None = Field(None, strict=True, gt=0,
                                     description="Omit to pay the open balance of `invoice_ids` (or all)")
    invoice_ids: list[str] | None = None
    allocations: list[AllocationIn] | None = Field(None, description="Explicit split; the rest becomes credit")


class AllocationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    invoice_id: str
    amount_minor: int
    refunded_minor: int


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt_no: int
    client_initiated: bool
    status: str
    decline_code: str | None
    stripe_payment_intent_id: str | None
    created_at: datetime
    completed_at: datetime | None


class PaymentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    client_id: str
    origin: str
    status: str
    amount_minor: int
    currency: str
    credit_minor: int
    fee_minor: int
    refunded_minor: int
    disputed_minor: int
    payment_method_id: uuid.UUID
    next_attempt_at: datetime | None
    last_decline_code: str | None
    stripe_payment_intent_id: str | None
    created_at: datetime
    settled_at: datetime | None
    allocations: list[AllocationOut] = []
    attempts: list[AttemptOut] = []


class PaymentPage(BaseModel):
    items: list[PaymentOut]
    next_cursor: str | None


class RetryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_method_id: uuid.UUID | None = Field(
        None, description="Another saved method of the client to pay with (default: the payment's own)")


class RefundCreate(BaseModel):
    amount_minor: int | None = Field(None, strict=True, gt=0, description="Omit for a full refund")
    reason: str | None = None


class RefundOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    payment_id: uuid.UUID
    amount_minor: int
    status: str
    reason: str | None
    stripe_refund_id: str | None


class CheckoutSetup(BaseModel):
    save_method: bool = Field(False, description="Keep the card for later payments")
    autopay: bool = Field(False, description="Also pay future invoices automatically with it")


class CheckoutSetupOut(BaseModel):
    setup_intent_id: str
    client_secret: str


class CheckoutMethod(BaseModel):
    setup_intent_id: str | None = Field(None, max_length=100,
                                        description="The SetupIntent the page confirmed with Stripe.js (a new card)")
    payment_method_id: uuid.UUID | None = Field(None, description="Or a bank account the client saved before")

    @model_validator(mode="after")
    def one_method(self) -> "CheckoutMethod":
        if (self.setup_intent_id is None) == (self.payment_method_id is None):
            raise ValueError("give either setup_intent_id (a new card) or payment_method_id (a saved bank account)")
        return self


class CheckoutPay(CheckoutSetup, CheckoutMethod):
    allocations: list[AllocationIn] = Field(min_length=1, max_length=100)
    card_fee_minor: int = Field(0, ge=0, description="The card convenience fee the page showed (see the card-fee "
                                                     "quote); a payment whose fee differs is refused with 409")


class CheckoutCardFee(BaseModel):
    amount_minor: int = Field(description="What goes to the invoices")
    card_basis_points: int = Field(description="The tenant's card convenience fee, 1/100 %; 0 when none")
    card_fee_minor: int = Field(description="Charged on top when paying by card (never by bank account)")
    card_total_minor: int


class CheckoutPaid(BaseModel):
    payment_id: uuid.UUID
    status: str
    amount_minor: int = Field(description="What goes to the invoices")
    card_fee_minor: int = Field(0, description="The convenience fee charged on top (cards only)")
    currency: str
    receipt_url: str
    message: str | None = Field(None, description="What to tell the payer when the card was declined")


class InstallmentPlanCreate(BaseModel):
    invoice_id: str
    payment_method_id: uuid.UUID
    parts: int = Field(ge=2, le=24, description="How many parts the open balance is split into")
    first_due_on: date | None = Field(None, description="Day of the first part (default: today, tenant's timezone)")
    every_days: int = Field(30, ge=7, le=92, description="Days between parts")


class ScheduledPartOut(BaseModel):
    seq: int
    due_on: date
    amount_minor: int


class InstallmentPartOut(ScheduledPartOut):
    status: str = Field(description="scheduled, or the status of the part's payment")
    payment_id: uuid.UUID | None


class InstallmentPlanOut(BaseModel):
    id: uuid.UUID
    client_id: str
    invoice_id: str
    payment_method_id: uuid.UUID
    currency: str
    total_minor: int
    status: str
    created_at: datetime
    parts: list[InstallmentPartOut]


class CheckoutPlanQuote(BaseModel):
    invoice_id: str
    currency: str
    total_minor: int = Field(description="The invoice's open balance, split exactly into the parts")
    parts: list[ScheduledPartOut] = Field(description="The first part is charged when the plan is confirmed")


class CheckoutPlan(CheckoutMethod):
    invoice_id: str = Field(max_length=128)
    parts: int = Field(ge=2, le=4, description="How many monthly parts the invoice's open balance is split into")


class CheckoutPlanOut(BaseModel):
    plan_id: uuid.UUID
    status: str = Field(description="The plan's status: active, or cancelled when the first part was declined")
    currency: str
    parts: list[InstallmentPartOut]
    first_payment: CheckoutPaid | None
