"""What every accounting connector offers, and the failures posting understands."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from payloop_gl_posting.journal import exponent

if TYPE_CHECKING:
    from payloop_gl_posting.journal import JournalEntry
    from payloop_gl_posting.models import AccountMapping


class PostingError(Exception):
    """A posting that did not happen; `reason` is what operators see and filter on."""

    reason = "vendor_error"
    retryable = True

    def __init__(self, detail: str, *, retry_after_s: float | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class InvoiceNotFound(PostingError):
    reason = "invoice_not_found"


class CustomerNotFound(PostingError):
    reason = "customer_not_found"
    retryable = False


class PeriodClosed(PostingError):
    reason = "closed_period"
    retryable = False  # only an accountant reopening the books (then a retry) helps


class RateLimited(PostingError):
    reason = "rate_limited"


class TokenRevoked(PostingError):
    reason = "token_revoked"
    retryable = False  # until the tenant reconnects; reconnecting re-queues these


class WaitingForPayment(PostingError):
    """A deposit or reversal whose payment is not posted yet: not an error unless it lasts."""

    reason = "waiting_for_payment"


class AccountNotMapped(PostingError):
    """The entry needs an account the tenant's mapping does not name (an optional one, such as the
    convenience fee income account): parked until the mapping names it, which re-queues it."""

    reason = "account_not_mapped"
    retryable = False


class Rejected(PostingError):
    """The vendor refused the request as invalid: retrying the same request cannot succeed."""

    reason = "rejected"
    retryable = False


@dataclass(frozen=True)
class LedgerAccount:
    id: str
    name: str
    type: str  # the vendor's account type, e.g. Bank, Expense, Other Current Asset


@dataclass(frozen=True)
class LedgerItem:
    id: str
    name: str


@dataclass(frozen=True)
class LedgerBalances:
    """What the accounting system itself says, read back to reconcile our journal against it."""

    as_of: date | None  # the end of that day; None: the current balances (all dates)
    accounts: dict[str, int]  # vendor account id -> balance in minor units, debit positive
    invoices: dict[str, int]  # invoice number -> amount still due in minor units (absent: no such invoice)


class Ledger(Protocol):
    """An accounting system as posting sees it; QuickBooks and Xero each implement it."""

    system: str

    async def chart_of_accounts(self) -> list[LedgerAccount]: ...

    async def items(self) -> list[LedgerItem]: ...

    async def find_posted(self, entry: JournalEntry, context: PostingContext) -> str | None:
        """The vendor id of what an earlier, unanswered call created for this entry, if it did."""

    async def post(self, entry: JournalEntry, mapping: AccountMapping, context: PostingContext) -> str:
        """Write the entry; returns the vendor id of its main record."""

    async def read_back(self, account_ids: list[str], invoice_numbers: list[str], currency: str,
                        as_of: date) -> LedgerBalances:
        """The accounts' balances (at the end of `as_of` where the vendor can say) and the invoices' amounts due."""


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Minor units to the vendor's decimal amount: exact, never through float."""
    return Decimal(amount_minor).scaleb(-exponent(currency))


def to_minor(amount: Any, currency: str) -> int:
    """A vendor's decimal amount (JSON number or report string) to minor units, exactly."""
    scaled = Decimal(str(amount)).scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise PostingError(f"amount {amount} has more decimals than {currency} allows")
    return int(scaled)


def chunks(values: list[str], size: int) -> list[list[str]]:
    return [values[n:n + size] for n in range(0, len(values), size)]


_DECIMAL_MARK = re.compile(r'"__decimal__(-?[0-9.]+)"')


def dumps(body: Any) -> str:
    """JSON with Decimal amounts as exact JSON numbers (stdlib json would go through float)."""
    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"__decimal__{value:f}"
        raise TypeError(type(value))
    return _DECIMAL_MARK.sub(r"\1", json.dumps(body, default=encode))


class PostingContext(Protocol):
    """What a connector may ask of our own records while it builds a vendor request."""

    async def invoice_number(self, invoice_id: str) -> str | None: ...

    async def posted_payment(self, payment_id: str) -> str | None:
        """The vendor id of a payment we posted, or None while it is not posted."""

    async def surcharge(self, payment_id: str) -> int:
        """The card convenience fee journaled for a payment (0 when none): in clearing beside the payment."""

    async def remembered(self, kind: str, our_id: str) -> str | None: ...

    async def remember(self, kind: str, our_id: str, external_id: str) -> None:
        """Store an id the vendor gave us at once (its own transaction), before the next step."""
