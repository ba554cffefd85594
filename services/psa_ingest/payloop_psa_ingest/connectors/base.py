"""What every PSA connector offers, the normalized records it yields, and its error classes.

A connector speaks one vendor's API (auth, pagination, filters, rate limits, webhooks) and maps its
records to our domain; the sync service (`sync.py`) decides what is new or changed and what to
publish. Records carry the vendor's ids only: our ids are derived by the sync service.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal, Protocol

# The kinds a sync pulls, in dependency order: invoices link clients and agreements, tickets link invoices.
ENTITY_KINDS = ("clients", "agreements", "invoices", "tickets")


class PsaError(Exception):
    """A failed call to a PSA. `retryable` says whether trying again later can succeed."""

    retryable = False

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class PsaAuthError(PsaError):
    """Credentials refused (401/403): stop, and tell the operator to fix the connection."""


class PsaRetryableError(PsaError):
    """Rate limits that outlasted our retries, 5xx, timeouts, network errors."""

    retryable = True


class PsaRequestError(PsaError):
    """The PSA refused the request itself (400, 404, 409...): retrying the same call will not help."""


class WebhookRejected(Exception):
    """A webhook or callback that cannot be verified as the vendor's: answer 401, change nothing."""


@dataclass(frozen=True)
class Line:
    kind: str
    description: str
    quantity: Decimal
    unit_price_minor: int
    amount_minor: int
    agreement_line_external_id: str | None = None


@dataclass(frozen=True)
class PsaClient:
    external_id: str
    name: str
    billing_emails: list[str]
    terms: str | None
    timezone: str | None


@dataclass(frozen=True)
class PsaAgreement:
    external_id: str
    client_external_id: str
    kind: str
    name: str
    billing_cycle: str | None
    starts_on: date | None
    ends_on: date | None
    lines: list[tuple[str, Line]]  # (addition external id, line)


@dataclass(frozen=True)
class PsaInvoice:
    external_id: str
    client_external_id: str
    number: str
    agreement: tuple[str, str, str] | None  # (external id, kind, name)
    currency: str
    issued_on: date
    due_on: date
    terms: str | None
    status: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    balance_minor: int
    lines: list[Line]
    # The day the PSA says it was paid in full, where the PSA records one (reporting dates payments
    # made outside Payloop by it, not by when we first saw the balance drop).
    paid_on: date | None = None


@dataclass(frozen=True)
class PsaCreditMemo:
    external_id: str
    client_external_id: str
    number: str
    currency: str
    issued_on: date
    total_minor: int
    applied_to: list[tuple[str, int]]  # (invoice external id, amount)


@dataclass(frozen=True)
class PsaDisputeTicket:
    external_id: str
    client_external_id: str
    summary: str
    invoice_numbers: list[str]
    open: bool


Record = PsaClient | PsaAgreement | PsaInvoice | PsaCreditMemo | PsaDisputeTicket


@dataclass(frozen=True)
class RecordError:
    """A record that could not be mapped: skipped, recorded on the sync run, the page still lands."""

    kind: str
    external_id: str | None
    error: str


@dataclass
class Page:
    records: list[Record] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    # The newest vendor `last updated` on this page: the cursor may advance to it once the page is stored.
    high_water: datetime | None = None


@dataclass(frozen=True)
class WebhookNotice:
    """A verified change notice: which connection-level kind changed (a sync of it follows)."""

    message_id: str
    kind: Literal["clients", "agreements", "invoices", "tickets"] | None
    external_id: str | None


@dataclass(frozen=True)
class RecordedPayment:
    external_id: str
    already_present: bool  # found by our reference: an earlier attempt landed (e.g. timed out after applying)


class PsaConnector(Protocol):
    source: str

    async def check(self) -> dict[str, Any]:
        """A cheap authenticated call; raises PsaError. Returns what the PSA says about itself."""

    def changes(self, kind: str, since: datetime | None) -> AsyncIterator[Page]:
        """Pages of `kind` records changed after `since` (all when None)."""

    async def record_payment(self, invoice_external_id: str, *, amount_minor: int, currency: str,
                             paid_on: date, reference: str) -> RecordedPayment:
        """Apply a payment (negative: a refund) to the invoice exactly once per `reference`."""

    async def register_webhooks(self, url: str) -> list[str]:
        """Subscribe the PSA's callbacks to `url`; returns the vendor's subscription ids."""

    async def verify_webhook(self, headers: dict[str, str], body: bytes) -> WebhookNotice:
        """Verify a delivery the vendor's way; raises WebhookRejected."""

    async def aclose(self) -> None:
        ...


def map_page(source: str, kind: str, raw: list[Any], mapper: Callable[[dict], Record],
             updated: Callable[[dict], datetime | None], *, id_field: str = "id") -> Page:
    """Map a page of vendor records; one that cannot be mapped is recorded and skipped, the rest land."""
    page = Page()
    for record in raw:
        external_id = str(record.get(id_field)) if isinstance(record, dict) else None
        try:
            page.records.append(mapper(record))
            stamp = updated(record)
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            page.errors.append(RecordError(kind, external_id,
                                           f"cannot map {source} {kind} record: {type(exc).__name__}: {exc}"))
            continue
        if stamp and (page.high_water is None or stamp > page.high_water):
            page.high_water = stamp
    return page


def to_minor(value: Any, decimals: int = 2) -> int:
    """A vendor amount (parsed as Decimal, never float) in minor units, half-even like the PSAs round."""
    if value is None:
        return 0
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    return int((amount * (Decimal(10) ** decimals)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


# Product identifier prefixes -> line kind. MSPs name their catalogue; a connection may override these.
DEFAULT_LINE_KINDS = {
    "MS-": "recurring", "DEV-": "per_device", "USR-": "per_user", "TIER-": "tiered",
    "PRORATE-": "proration", "ADJ-": "adjustment", "CREDIT": "credit",
}


def kind_from_prefix(identifier: str, prefixes: dict[str, str]) -> str | None:
    """The line kind a catalogue identifier's prefix names (longest prefix wins), or None."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if identifier.upper().startswith(prefix.upper()):
            return prefixes[prefix]
    return None


def snake(name: str | None, default: str = "other") -> str:
    if not name:
        return default
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split()) or default
