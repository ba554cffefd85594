"""The catalogue of every Payloop event type and the schema of its `data`, by version.

This module is the single source of truth for event payloads: producers validate through
`new_event`, consumers through `CATALOGUE.parse`, and `payloop events schema` renders
`docs/events/asyncapi.yaml` and `docs/events/schemas/*.json` from it (a test fails on drift).
Changes within a version are additive; a breaking change adds version N+1 beside N, with an
upcaster from N, until every consumer has moved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any, Callable, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

# Money is integer minor units; strict so that 10.5 or "10" is refused, never rounded.
Minor = Annotated[int, Field(strict=True, description="Amount in minor units of `currency` (cents)")]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")]


class EventData(BaseModel):
    """Base of every `data` schema: producers may add fields, so consumers keep what they do not know."""

    model_config = ConfigDict(extra="allow")


# --- shared parts -------------------------------------------------------------------------------

class PsaRef(EventData):
    source: Literal["connectwise", "autotask", "halopsa", "superops"]
    external_id: str


class AgreementRef(EventData):
    id: str
    kind: str = Field(description="managed_services, block_hours, time_and_materials, ...")
    name: str


InvoiceLineKind = Literal[
    "recurring", "per_device", "per_user", "tiered", "time", "product", "proration", "adjustment", "credit"
]
InvoiceStatus = Literal["open", "partially_paid", "paid", "void", "written_off"]


class InvoiceLine(EventData):
    kind: InvoiceLineKind
    description: str
    quantity: str = Field(description="Decimal quantity as a string (hours may be fractional)")
    unit_price_minor: Minor
    amount_minor: Minor
    agreement_line_id: str | None = None


class PaymentMethodSummary(EventData):
    type: Literal["card", "ach"]
    brand: str | None = Field(None, description="Card brand, or bank name for ACH")
    last4: str | None = None


class Allocation(EventData):
    invoice_id: str
    amount_minor: Minor


class ProcessorRef(EventData):
    name: Literal["stripe"] = "stripe"
    payment_intent_id: str | None = None
    charge_id: str | None = None


# --- tenants --------------------------------------------------------------------------------------

class TenantUpdatedV1(EventData):
    tenant_id: str
    name: str
    timezone: str
    currency: Currency
    branding: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


# --- psa_ingest -----------------------------------------------------------------------------------

class ClientUpsertedV1(EventData):
    client_id: str
    psa: PsaRef
    name: str
    billing_emails: list[str] = Field(default_factory=list)
    terms: str | None = None
    timezone: str | None = None


class AgreementLine(EventData):
    id: str
    kind: InvoiceLineKind
    description: str
    quantity: str
    unit_price_minor: Minor


class AgreementUpsertedV1(EventData):
    agreement_id: str
    client_id: str
    psa: PsaRef
    kind: str
    name: str
    billing_cycle: str | None = None
    starts_on: date | None = None
    ends_on: date | None = None
    lines: list[AgreementLine] = Field(default_factory=list)


class InvoiceV1(EventData):
    invoice_id: str
    psa: PsaRef
    number: str
    agreement: AgreementRef | None
    currency: Currency
    issued_on: date
    due_on: date
    terms: str | None
    status: InvoiceStatus
    subtotal_minor: Minor
    tax_minor: Minor
    total_minor: Minor
    balance_minor: Minor
    lines: list[InvoiceLine]
    paid_on: date | None = Field(None, description=(
        "The day the PSA says the invoice was paid in full (its latest payment), where the PSA records "
        "one; null while open or when the PSA gives no date"))


class InvoiceUpdatedV1(InvoiceV1):
    changes: dict[str, Any] = Field(description="Field name -> {from, to} of what changed since last seen")


class InvoiceVoidedV1(EventData):
    invoice_id: str
    psa: PsaRef
    number: str
    voided_at: AwareDatetime | None = None


class CreditMemoCreatedV1(EventData):
    credit_memo_id: str
    psa: PsaRef
    number: str
    currency: Currency
    issued_on: date
    total_minor: Minor = Field(description="Positive amount of credit")
    applied_to: list[Allocation] = Field(default_factory=list)


class TicketFlaggedV1(EventData):
    ticket_id: str
    psa: PsaRef
    invoice_ids: list[str]
    reason: Literal["billing_dispute"] = "billing_dispute"
    summary: str | None = None
    open: bool = True


class PsaPaymentRecordedV1(EventData):
    payment_id: str
    invoice_id: str
    psa: PsaRef
    amount_minor: Minor
    currency: Currency


class PsaSyncFailedV1(EventData):
    connection_id: str
    source: str
    error: str
    retryable: bool


# --- payments -------------------------------------------------------------------------------------

class PaymentMethodUpdatedV1(EventData):
    payment_method_id: str
    method: PaymentMethodSummary
    status: Literal["active", "unusable", "revoked", "detached"]
    reason: str | None = None


class AutopayChangedV1(EventData):
    enrolled: bool
    payment_method_id: str | None = None
    rule: dict[str, Any] | None = None
    reason: str | None = None


class PaymentBase(EventData):
    payment_id: str
    method: PaymentMethodSummary
    amount_minor: Minor
    currency: Currency
    fee_minor: Minor = 0
    # A card convenience fee charged on top of amount_minor (the processor charged the sum): the
    # MSP's income, in no allocation. Consumers that ignore it see amount = allocations + credit.
    surcharge_minor: Minor = 0
    allocations: list[Allocation]
    attempt: int = 1
    processor: ProcessorRef

    def settlement_id(self) -> str:
        """One settlement of the payment: a returned ACH debit re-presented later settles the same payment
        again (as its attempt N), and consumers must count that settlement apart from the first."""
        return self.payment_id if self.attempt <= 1 else f"{self.payment_id}.{self.attempt}"

    def taken_back(self, amount_minor: int) -> list[tuple[str, int]]:
        """What a refund, dispute or return of `amount_minor` takes from each invoice: the allocations in
        their order until it is used up, as (invoice id, positive amount)."""
        remaining, taken = amount_minor, []
        for allocation in self.allocations:
            part = min(allocation.amount_minor, remaining)
            if part <= 0:
                break
            taken.append((allocation.invoice_id, part))
            remaining -= part
        return taken


class PaymentInitiatedV1(PaymentBase):
    origin: Literal["autopay", "checkout", "installment", "manual"] = "checkout"


class PaymentSettledV1(PaymentBase):
    settled_at: AwareDatetime | None = None


class PaymentFailedV1(PaymentBase):
    decline_code: str | None
    retryable: bool
    next_attempt_at: AwareDatetime | None


class PaymentRefundedV1(PaymentBase):
    refund_id: str
    refunded_minor: Minor
    reason: str | None = None


class PaymentDisputedV1(PaymentBase):
    dispute_id: str
    disputed_minor: Minor
    disputed_surcharge_minor: Minor = Field(
        0, description="What the processor's dispute takes beyond `disputed_minor` (which stops at the "
        "payment's amount less refunds): its share of the card convenience fee (`surcharge_minor`), at most "
        "that fee. Withdrawn with the dispute, returned if it is won (the won event repeats it); 0 when the "
        "payment had no fee or the dispute stops short of it")
    reason: str | None = None
    status: str = "needs_response"


class InstallmentPart(EventData):
    due_on: date
    amount_minor: Minor


class InstallmentPlanCreatedV1(EventData):
    plan_id: str
    invoice_id: str
    payment_method_id: str
    currency: Currency
    parts: list[InstallmentPart]


class PayoutItem(EventData):
    type: Literal["charge", "refund", "dispute", "adjustment", "fee"]
    payment_id: str | None
    gross_minor: Minor
    fee_minor: Minor
    net_minor: Minor


class PayoutPaidV1(EventData):
    payout_id: str
    arrival_date: date
    amount_minor: Minor
    currency: Currency
    items: list[PayoutItem] = Field(description="The items' net amounts sum to `amount_minor`")

    @model_validator(mode="after")
    def _items_sum_to_amount(self) -> "PayoutPaidV1":
        net = sum(item.net_minor for item in self.items)
        if net != self.amount_minor:
            raise ValueError(f"payout items net to {net}, not to the payout amount {self.amount_minor}")
        return self


# --- collections ----------------------------------------------------------------------------------

class ReminderSentV1(EventData):
    invoice_ids: list[str]
    step: int = Field(description="Days relative to the due date, e.g. -3, 0, 7")
    level: Literal["courtesy", "friendly", "firm", "final", "handoff"]
    channel: Literal["email", "sms"]
    to: list[str]
    template: str


class CollectionEscalatedV1(EventData):
    case_id: str
    level: str
    invoice_ids: list[str]
    task_id: str | None = None


class CollectionPausedV1(EventData):
    case_id: str
    reason: Literal["dispute", "promise", "installment_plan", "manual"]
    until: date | None = None


class PromiseRecordedV1(EventData):
    promise_id: str
    invoice_ids: list[str]
    promised_on: date
    amount_minor: Minor
    currency: Currency


class ClientBehaviourChangedV1(EventData):
    """Days-to-pay are durations, not money: one decimal place is plenty."""

    samples: int = Field(description="Paid invoices the figures are computed from")
    average_days_to_pay: float
    recent_days_to_pay: float | None = Field(description="Invoices paid within `window_days` of the newest payment")
    baseline_days_to_pay: float | None = Field(description="Invoices paid before that window")
    on_time_ratio: float = Field(ge=0, le=1)
    drifting: bool = Field(description="Recent days-to-pay are well above the baseline")
    window_days: int


# --- gl_posting -----------------------------------------------------------------------------------

class GlPostedV1(EventData):
    entry_id: str
    # convenience_fee: a card convenience fee booked as the MSP's income (added in v1, additive)
    purpose: Literal["payment", "deposit", "fee", "refund", "dispute", "dispute_won", "convenience_fee"]
    system: Literal["quickbooks", "xero"]
    external_id: str
    source_event_id: str


class GlPostFailedV1(EventData):
    entry_id: str
    purpose: str
    system: Literal["quickbooks", "xero"]
    reason: str
    retryable: bool
    source_event_id: str


# --- audit and partner webhooks -----------------------------------------------------------------

class AuditActor(EventData):
    subject: str = Field(description="The token's `sub`: who acted")
    scopes: list[str] = Field(default_factory=list)


class AuditTarget(EventData):
    type: str = Field(description="What was acted on, e.g. webhook_endpoint, psa_connection, payment")
    id: str


class AuditRecordedV1(EventData):
    audit_id: str
    action: str = Field(description="Dotted verb, e.g. webhook_endpoint.secret_rotated, payment.refunded")
    actor: AuditActor
    target: AuditTarget
    details: dict[str, Any] = Field(default_factory=dict, description="Never holds secrets (redacted)")


class WebhookEndpointDisabledV1(EventData):
    endpoint_id: str
    url: str
    reason: str
    failed_delivery_id: str | None = None
    disabled_at: AwareDatetime


# --- the registry ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class CatalogueEntry:
    type: str
    version: int
    model: type[EventData]
    producer: str
    summary: str
    upcast_from_previous: Callable[[dict[str, Any]], dict[str, Any]] | None = None


@dataclass
class Catalogue:
    entries: dict[tuple[str, int], CatalogueEntry] = field(default_factory=dict)
    # Each type's versions, sorted: `parse` runs for every consumed event, a scan of `entries` would not do.
    _versions: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def add(self, entry: CatalogueEntry) -> None:
        key = (entry.type, entry.version)
        previous = self.entries.get(key)
        self.entries[key] = entry
        self._versions.pop(entry.type, None)
        # Refuse a version that `parse` could not reach, at import time rather than at the first old event.
        for version in self.versions(entry.type)[1:]:
            if self.entries[(entry.type, version)].upcast_from_previous is None:
                if previous is None:
                    del self.entries[key]
                else:
                    self.entries[key] = previous
                self._versions.pop(entry.type, None)
                raise MissingUpcaster(f"{entry.type} v{version} lacks an upcaster from the previous version")

    def types(self) -> list[str]:
        return sorted({t for t, _ in self.entries})

    def versions(self, type: str) -> list[int]:
        if type not in self._versions:
            versions = sorted(v for t, v in self.entries if t == type)
            if not versions:
                raise UnknownEventType(type)
            self._versions[type] = versions
        return list(self._versions[type])

    def current(self, type: str) -> CatalogueEntry:
        return self.entries[(type, self.versions(type)[-1])]

    def get(self, type: str, version: int) -> CatalogueEntry:
        try:
            return self.entries[(type, version)]
        except KeyError:
            raise UnknownEventType(f"{type} v{version}") from None

    def parse(self, type: str, version: int, data: dict[str, Any]) -> EventData:
        """Validate `data` as the given version, upcasting older versions to the newest."""
        entry = self.get(type, version)
        model = entry.model.model_validate(data)
        for newer in self.versions(type):
            if newer <= version:
                continue
            step = self.get(type, newer)
            if step.upcast_from_previous is None:  # an assert would vanish under `python -O`
                raise MissingUpcaster(f"{type} v{newer} lacks an upcaster from the previous version")
            model = step.model.model_validate(step.upcast_from_previous(model.model_dump(mode="json")))
        return model


class UnknownEventType(KeyError):
    pass


class MissingUpcaster(ValueError):
    """A newer version of an event type has no way to be reached from the version before it."""


CATALOGUE = Catalogue()
for _entry in (
    CatalogueEntry("tenant.updated", 1, TenantUpdatedV1, "tenants", "A tenant was created or its profile changed"),
    CatalogueEntry("client.upserted", 1, ClientUpsertedV1, "psa_ingest", "A client (PSA company) was seen or changed"),
    CatalogueEntry("agreement.upserted", 1, AgreementUpsertedV1, "psa_ingest", "An agreement was seen or changed"),
    CatalogueEntry("invoice.created", 1, InvoiceV1, "psa_ingest", "An invoice was issued in the PSA"),
    CatalogueEntry("invoice.updated", 1, InvoiceUpdatedV1, "psa_ingest", "An invoice changed after issue"),
    CatalogueEntry("invoice.voided", 1, InvoiceVoidedV1, "psa_ingest", "An invoice was voided in the PSA"),
    CatalogueEntry("credit_memo.created", 1, CreditMemoCreatedV1, "psa_ingest", "A credit memo was issued"),
    CatalogueEntry("ticket.flagged", 1, TicketFlaggedV1, "psa_ingest", "A PSA ticket marks a billing dispute"),
    CatalogueEntry("psa.payment_recorded", 1, PsaPaymentRecordedV1, "psa_ingest", "A payment was written back to the PSA"),
    CatalogueEntry("psa.sync_failed", 1, PsaSyncFailedV1, "psa_ingest", "A PSA sync run failed"),
    CatalogueEntry("payment_method.updated", 1, PaymentMethodUpdatedV1, "payments", "A stored payment method changed"),
    CatalogueEntry("autopay.changed", 1, AutopayChangedV1, "payments", "A client's auto-pay enrollment changed"),
    CatalogueEntry("payment.initiated", 1, PaymentInitiatedV1, "payments", "A charge was started"),
    CatalogueEntry("payment.settled", 1, PaymentSettledV1, "payments", "A payment succeeded"),
    CatalogueEntry("payment.failed", 1, PaymentFailedV1, "payments", "A payment attempt failed"),
    CatalogueEntry("payment.refunded", 1, PaymentRefundedV1, "payments", "A payment was refunded in full or part"),
    CatalogueEntry("payment.disputed", 1, PaymentDisputedV1, "payments", "A payment was disputed or returned"),
    CatalogueEntry("installment_plan.created", 1, InstallmentPlanCreatedV1, "payments", "An installment plan was agreed"),
    CatalogueEntry("payout.paid", 1, PayoutPaidV1, "payments", "The processor paid out to the MSP's bank"),
    CatalogueEntry("reminder.sent", 1, ReminderSentV1, "collections", "A reminder or notice was sent"),
    CatalogueEntry("collection.escalated", 1, CollectionEscalatedV1, "collections", "A case was escalated"),
    CatalogueEntry("collection.paused", 1, CollectionPausedV1, "collections", "A case was paused"),
    CatalogueEntry("promise.recorded", 1, PromiseRecordedV1, "collections", "A client promised to pay"),
    CatalogueEntry("client.behaviour_changed", 1, ClientBehaviourChangedV1, "collections",
                   "A client's payment behaviour (days-to-pay, on-time ratio, drift) changed"),
    CatalogueEntry("gl.posted", 1, GlPostedV1, "gl_posting", "An entry was posted to the accounting system"),
    CatalogueEntry("gl.post_failed", 1, GlPostFailedV1, "gl_posting", "Posting to the accounting system failed"),
    CatalogueEntry("audit.recorded", 1, AuditRecordedV1, "any",
                   "A sensitive action was taken (recorded by any service, stored by tenants)"),
    CatalogueEntry("webhook_endpoint.disabled", 1, WebhookEndpointDisabledV1, "tenants",
                   "A partner webhook endpoint was disabled after persistent delivery failure"),
):
    CATALOGUE.add(_entry)

__all__ = ["CATALOGUE", "Catalogue", "CatalogueEntry", "EventData", "MissingUpcaster", "UnknownEventType"]
