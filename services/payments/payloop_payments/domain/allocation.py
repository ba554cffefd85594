"""Splitting a payment across invoices, and client credit.

All amounts are integer minor units; every function here conserves money exactly: what goes in
is what is allocated plus what becomes client credit, never a cent more or less.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class OpenInvoice:
    invoice_id: str
    due_on: date
    open_minor: int


@dataclass(frozen=True)
class Allocation:
    invoice_id: str
    amount_minor: int


@dataclass(frozen=True)
class AllocationResult:
    allocations: tuple[Allocation, ...]
    credit_minor: int  # the overpayment, kept as client credit

    @property
    def allocated_minor(self) -> int:
        return sum(a.amount_minor for a in self.allocations)


class AllocationError(ValueError):
    pass


def allocate(amount_minor: int, invoices: list[OpenInvoice],
             requested: dict[str, int] | None = None) -> AllocationResult:
    """Allocate `amount_minor` to `invoices`.

    With `requested` (invoice id -> amount) the payer chose the split: each part must fit the
    invoice's open balance, and what is left over becomes credit. Without it the oldest due invoice
    is paid first (the order clients and accountants expect), and any excess becomes credit.
    """
    if amount_minor <= 0:
        raise AllocationError("a payment must be a positive amount")
    by_id = {inv.invoice_id: inv for inv in invoices}
    if requested is not None:
        parts = []
        for invoice_id, part in requested.items():
            invoice = by_id.get(invoice_id)
            if invoice is None:
                raise AllocationError(f"invoice {invoice_id} is not open for this client")
            if part <= 0 or part > invoice.open_minor:
                raise AllocationError(f"invoice {invoice_id}: {part} is outside 1..{invoice.open_minor}")
            parts.append(Allocation(invoice_id, part))
        total = sum(p.amount_minor for p in parts)
        if total > amount_minor:
            raise AllocationError(f"allocations ({total}) exceed the payment ({amount_minor})")
        return AllocationResult(tuple(parts), amount_minor - total)
    remaining = amount_minor
    parts = []
    for invoice in sorted(invoices, key=lambda i: (i.due_on, i.invoice_id)):
        if remaining == 0:
            break
        part = min(remaining, invoice.open_minor)
        if part > 0:
            parts.append(Allocation(invoice.invoice_id, part))
            remaining -= part
    return AllocationResult(tuple(parts), remaining)


def open_balance(*, psa_balance_minor: int, total_minor: int, credited_minor: int,
                 collected_minor: int, pending_minor: int) -> int:
    """What may still be charged on an invoice.

    The PSA's balance also reflects payments recorded outside Payloop (a cheque), while our own
    ledger reflects what we collected before the PSA shows it: the smaller of the two is owed.
    Money already in flight (pending or processing) is not charged twice.
    """
    owed = min(psa_balance_minor, total_minor - credited_minor - collected_minor)
    return max(0, owed - pending_minor)


def apply_credit(credit_minor: int, charge_minor: int) -> tuple[int, int]:
    """Use client credit against a charge: (credit used, amount still to charge)."""
    used = max(0, min(credit_minor, charge_minor))
    return used, charge_minor - used


def split_refund(refund_minor: int, allocations: list[Allocation], credit_minor: int
                 ) -> tuple[int, list[Allocation]]:
    """Which part of a refund comes back out of credit and which out of each invoice.

    Credit (the overpayment) is refunded first, then invoices newest allocation first, so a partial
    refund reopens as few invoices as possible. Returns (credit reversed, invoice reversals).
    """
    paid = credit_minor + sum(a.amount_minor for a in allocations)
    if refund_minor <= 0 or refund_minor > paid:
        raise AllocationError(f"refund {refund_minor} is outside 1..{paid}")
    from_credit = min(credit_minor, refund_minor)
    remaining = refund_minor - from_credit
    reversals = []
    for allocation in reversed(allocations):
        if remaining == 0:
            break
        part = min(remaining, allocation.amount_minor)
        reversals.append(Allocation(allocation.invoice_id, part))
        remaining -= part
    return from_credit, reversals


def split_installments(balance_minor: int, parts: int) -> list[int]:
    """N installment amounts summing exactly to the balance; the remainder cents go first."""
    if parts < 1 or balance_minor < parts:
        raise AllocationError(f"cannot split {balance_minor} into {parts} parts")
    base, extra = divmod(balance_minor, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
