"""The internal double-entry journal: what each event means in accounts, before any vendor sees it.

Every entry is keyed by (source event id, purpose), so a redelivered event maps onto the entry that
already exists, and every entry balances (debits equal credits) or it is refused. Amounts are
signed integer minor units: positive is a debit, negative a credit. Accounts are roles
(`clearing`, `bank`, ...) that the tenant's account mapping resolves to vendor accounts.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

Purpose = Literal["payment", "deposit", "refund", "dispute", "dispute_won", "convenience_fee"]
AccountRole = Literal["clearing", "bank", "fee_expense", "receivable", "client_credit", "refunds", "convenience_fee"]

# Payout items that are the processor's own charges or credits, not money a payment put into clearing.
PROCESSOR_ITEMS = frozenset({"adjustment", "fee"})

# A fixed namespace so an entry's id is derived from our own ids and never from chance: the same
# (event, purpose) always yields the same entry id, and so the same vendor idempotency key.
_ENTRY_NAMESPACE = uuid.UUID("7d0f4f1e-3c1a-4a51-9a1e-6c9b1f0e2a10")


class UnbalancedEntry(ValueError):
    """Debits and credits differ: the event is inconsistent and must not be posted."""


@dataclass(frozen=True)
class JournalLine:
    account: AccountRole
    amount_minor: int  # + debit, - credit
    memo: str = ""


@dataclass(frozen=True)
class JournalEntry:
    id: uuid.UUID
    tenant_id: str
    source_event_id: uuid.UUID
    purpose: Purpose
    subject_id: str  # the payment or payout this entry is about
    currency: str
    occurred_on: date
    lines: tuple[JournalLine, ...]
    # What a connector needs beyond the lines (allocations, payout items), as plain JSON.
    details: dict[str, Any] = field(default_factory=dict)
    client_id: str | None = None

    def __post_init__(self) -> None:
        total = sum(line.amount_minor for line in self.lines)
        if total != 0:
            raise UnbalancedEntry(f"{self.purpose} entry for {self.subject_id} is off by {total}")
        if not any(line.amount_minor for line in self.lines):
            raise UnbalancedEntry(f"{self.purpose} entry for {self.subject_id} moves nothing")

    def amount(self, account: AccountRole) -> int:
        return sum(line.amount_minor for line in self.lines if line.account == account)

    @property
    def reference(self) -> str:
        """Our reference on the vendor's record (QuickBooks DocNumber, at most 21 characters)."""
        return f"PL-{self.id.hex[:16]}"


def entry_id(source_event_id: uuid.UUID, purpose: str) -> uuid.UUID:
    return uuid.uuid5(_ENTRY_NAMESPACE, f"{source_event_id}:{purpose}")


def _entry(purpose: Purpose, *, tenant_id: str, source_event_id: uuid.UUID, subject_id: str,
           currency: str, occurred_on: date, lines: list[JournalLine], details: dict[str, Any],
           client_id: str | None) -> JournalEntry:
    return JournalEntry(id=entry_id(source_event_id, purpose), tenant_id=tenant_id,
                        source_event_id=source_event_id, purpose=purpose, subject_id=subject_id,
                        currency=currency, occurred_on=occurred_on,
                        lines=tuple(line for line in lines if line.amount_minor),
                        details=details, client_id=client_id)


def payment_settled(*, tenant_id: str, source_event_id: uuid.UUID, payment_id: str, amount_minor: int,
                    currency: str, allocations: list[dict[str, Any]], occurred_on: date,
                    client_id: str | None = None) -> JournalEntry:
    """Cash into clearing; receivables of the allocated invoices down; any excess is client credit."""
    allocated = sum(a["amount_minor"] for a in allocations)
    if any(a["amount_minor"] <= 0 for a in allocations) or allocated > amount_minor:
        raise UnbalancedEntry(f"payment {payment_id} allocates {allocated} of {amount_minor}")
    lines = [JournalLine("clearing", amount_minor, f"payment {payment_id}")]
    lines += [JournalLine("receivable", -a["amount_minor"], f"invoice {a['invoice_id']}") for a in allocations]
    lines.append(JournalLine("client_credit", -(amount_minor - allocated), "unapplied"))
    return _entry("payment", tenant_id=tenant_id, source_event_id=source_event_id, subject_id=payment_id,
                  currency=currency, occurred_on=occurred_on, lines=lines, client_id=client_id,
                  details={"amount_minor": amount_minor, "allocations": allocations,
                           "unapplied_minor": amount_minor - allocated})


def convenience_fee(*, tenant_id: str, source_event_id: uuid.UUID, payment_id: str, surcharge_minor: int,
                    currency: str, occurred_on: date, client_id: str | None = None) -> JournalEntry:
    """A card convenience fee charged on top of a payment: the processor took it into clearing with the
    payment (the payout's charge item grosses both), and it is the MSP's income, paying no invoice.

    An entry of its own, beside the payment's: the payment's vendor record (applied to invoices) cannot
    carry income, and a fee waiting for its income account to be mapped holds up nothing else.
    """
    if surcharge_minor <= 0:
        raise UnbalancedEntry(f"convenience fee of payment {payment_id} of {surcharge_minor}")
    lines = [JournalLine("clearing", surcharge_minor, f"convenience fee of payment {payment_id}"),
             JournalLine("convenience_fee", -surcharge_minor, "card convenience fee income")]
    return _entry("convenience_fee", tenant_id=tenant_id, source_event_id=source_event_id, subject_id=payment_id,
                  currency=currency, occurred_on=occurred_on, lines=lines, client_id=client_id,
                  details={"amount_minor": surcharge_minor, "payment_id": payment_id})


def payout_paid(*, tenant_id: str, source_event_id: uuid.UUID, payout_id: str, amount_minor: int,
                currency: str, items: list[dict[str, Any]], arrival_date: date) -> JournalEntry:
    """The bank gets the net; clearing gives up the gross of every payment item; fees go to expense.

    Per item net = gross - fee, so bank + fees = sum of gross and the entry balances to the cent.
    Processor adjustments and fees billed on their own (`PROCESSOR_ITEMS`) never went through
    clearing: their gross is the processor's charge or credit, booked to fee expense with the fees,
    or clearing would not return to zero.
    """
    for item in items:
        if item["gross_minor"] - item["fee_minor"] != item["net_minor"]:
            raise UnbalancedEntry(f"payout {payout_id} item {item.get('payment_id')} nets wrongly")
    cleared = sum(item["gross_minor"] for item in items if item["type"] not in PROCESSOR_ITEMS)
    adjustments = -sum(item["gross_minor"] for item in items if item["type"] in PROCESSOR_ITEMS)
    fees = sum(item["fee_minor"] for item in items)
    lines = [JournalLine("bank", amount_minor, f"payout {payout_id}"),
             JournalLine("fee_expense", fees + adjustments, "processing fees and adjustments"),
             JournalLine("clearing", -cleared, "cleared by payout")]
    return _entry("deposit", tenant_id=tenant_id, source_event_id=source_event_id, subject_id=payout_id,
                  currency=currency, occurred_on=arrival_date, lines=lines, client_id=None,
                  details={"amount_minor": amount_minor, "fee_minor": fees, "adjustment_minor": adjustments,
                           "items": items})


def payment_reversed(purpose: Literal["refund", "dispute"], *, tenant_id: str, source_event_id: uuid.UUID,
                     payment_id: str, reversal_id: str, amount_minor: int, currency: str, occurred_on: date,
                     client_id: str | None = None, surcharge_minor: int = 0) -> JournalEntry:
    """Money handed back (refund) or taken back (dispute) out of clearing, against refunds.

    A dispute takes the whole charge, so with it the share of the card convenience fee it withdrew
    (`surcharge_minor`): out of clearing too, and the fee's income reversed, the money having gone back.
    """
    if amount_minor <= 0 or surcharge_minor < 0:
        raise UnbalancedEntry(f"{purpose} {reversal_id} of {amount_minor} and fee {surcharge_minor}")
    lines = [JournalLine("refunds", amount_minor, f"{purpose} {reversal_id}"),
             JournalLine("convenience_fee", surcharge_minor, f"{purpose} {reversal_id}: convenience fee"),
             JournalLine("clearing", -(amount_minor + surcharge_minor), f"{purpose} of payment {payment_id}")]
    return _entry(purpose, tenant_id=tenant_id, source_event_id=source_event_id, subject_id=payment_id,
                  currency=currency, occurred_on=occurred_on, lines=lines, client_id=client_id,
                  details={"amount_minor": amount_minor, "surcharge_minor": surcharge_minor,
                           "reversal_id": reversal_id, "payment_id": payment_id})


def dispute_won(*, tenant_id: str, source_event_id: uuid.UUID, payment_id: str, dispute_id: str,
                amount_minor: int, currency: str, occurred_on: date, client_id: str | None = None,
                surcharge_minor: int = 0) -> JournalEntry:
    """A won dispute: the processor returns what the dispute withdrew, so the withdrawal is reversed line
    for line (back into clearing, out of refunds and, for a convenience fee's share, back into its income);
    the payout that carries the money then clears it."""
    if amount_minor <= 0 or surcharge_minor < 0:
        raise UnbalancedEntry(f"won dispute {dispute_id} of {amount_minor} and fee {surcharge_minor}")
    lines = [JournalLine("clearing", amount_minor + surcharge_minor, f"dispute {dispute_id} won: funds returned"),
             JournalLine("refunds", -amount_minor, f"dispute {dispute_id} reversed"),
             JournalLine("convenience_fee", -surcharge_minor, f"dispute {dispute_id} reversed: convenience fee")]
    return _entry("dispute_won", tenant_id=tenant_id, source_event_id=source_event_id, subject_id=payment_id,
                  currency=currency, occurred_on=occurred_on, lines=lines, client_id=client_id,
                  details={"amount_minor": amount_minor, "surcharge_minor": surcharge_minor,
                           "reversal_id": dispute_id, "payment_id": payment_id})


# ISO 4217 minor-unit exponents that are not 2; only used at the accounting API edge.
_EXPONENTS = {"JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}


def exponent(currency: str) -> int:
    return _EXPONENTS.get(currency.upper(), 2)
