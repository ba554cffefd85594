"""The reconciliation report of a tenant and period: what was collected, what reached the books.

From our journal: every settled payment posted, every payout deposited (and for the payout's
amount), the clearing account back to zero once payouts are in, fees as expense. Then, when the
tenant is connected, read back from the accounting system itself: the clearing and bank accounts'
balances and the amounts still due on the invoices the period's payments paid, against what our
posted journal says they should be. Every difference is listed as a mismatch, so a manual entry
someone made in the books, a deleted payment or an invoice edited there shows up at month end.
"""
from __future__ import annotations

from datetime import date
from typing import Any, get_args

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from payloop_gl_posting import repository
from payloop_gl_posting.connectors.base import Ledger, PostingError
from payloop_gl_posting.journal import Purpose
from payloop_gl_posting.models import AccountMapping, Entry

# The journal roles whose vendor accounts are read back, and the mapping field naming each.
READ_BACK_ROLES = {"clearing": "clearing_account_id", "bank": "bank_account_id"}


async def report(session: AsyncSession, tenant_id: str, start: date, end: date, *,
                 ledger: Ledger | None = None, mapping: AccountMapping | None = None) -> dict:
    entries = await repository.entries_in_period(session, tenant_id, start, end)
    totals = {purpose: {"count": 0, "amount_minor": 0, "posted_count": 0, "posted_amount_minor": 0}
              for purpose in get_args(Purpose)}
    mismatches = []
    fees = 0
    for entry in entries:
        amount = entry.details["amount_minor"]
        bucket = totals[entry.purpose]
        bucket["count"] += 1
        bucket["amount_minor"] += amount
        if entry.purpose == "deposit":
            fees += entry.details["fee_minor"]
        if entry.state == "posted":
            bucket["posted_count"] += 1
            bucket["posted_amount_minor"] += amount
        else:
            mismatches.append({"kind": f"{entry.purpose}_not_posted", "entry_id": str(entry.id),
                               "subject_id": entry.subject_id, "amount_minor": amount, "state": entry.state,
                               "detail": entry.last_error})
    clearing_journal = await repository.account_balance(session, tenant_id, "clearing", through=end, posted_only=False)
    clearing_posted = await repository.account_balance(session, tenant_id, "clearing", through=end, posted_only=True)
    if clearing_posted != clearing_journal:
        mismatches.append({"kind": "clearing_differs", "amount_minor": clearing_journal - clearing_posted,
                           "detail": "the books' clearing balance differs from our journal by what is unposted"})
    currencies = sorted({entry.currency for entry in entries})
    read_back = None
    if ledger is not None and mapping is not None:
        # Only the exponent matters at the vendor edge; a tenant without entries has nothing in another currency.
        read_back, differences = await compare_with_ledger(session, tenant_id, entries, ledger, mapping,
                                                           currency=currencies[0] if currencies else "USD", as_of=end)
        mismatches += differences
    return {
        "tenant_id": tenant_id, "period_start": start, "period_end": end, "currencies": currencies,
        "payments": totals["payment"], "deposits": totals["deposit"], "refunds": totals["refund"],
        "disputes": totals["dispute"], "disputes_won": totals["dispute_won"],
        "convenience_fees": totals["convenience_fee"], "fees_minor": fees,
        "clearing_balance_minor": clearing_journal, "clearing_posted_balance_minor": clearing_posted,
        "ledger": read_back,
        "balanced": not mismatches and clearing_journal == 0,
        "mismatches": mismatches,
    }


async def compare_with_ledger(session: AsyncSession, tenant_id: str, entries: list[Entry], ledger: Ledger,
                              mapping: AccountMapping, *, currency: str,
                              as_of: date) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The vendor's own numbers beside ours, and a mismatch for each that differs.

    Ours are what our posted entries put there: an account's posted journal balance (through the date
    the vendor's balance is for), an invoice's total less every posted payment applied to it.
    """
    invoice_ids = sorted({a["invoice_id"] for e in entries if e.purpose == "payment" for a in e.details["allocations"]})
    invoices = await repository.invoices(session, tenant_id, invoice_ids)
    accounts = {role: getattr(mapping, field) for role, field in READ_BACK_ROLES.items()}
    try:
        theirs = await ledger.read_back(list(accounts.values()), [i.number for i in invoices], currency, as_of)
    except (PostingError, httpx.HTTPError) as exc:
        return None, [{"kind": "ledger_unreadable", "detail": f"could not read back from {ledger.system}: {exc}"}]
    mismatches: list[dict[str, Any]] = []
    account_rows = []
    for role, account_id in accounts.items():
        ours = await repository.account_balance(session, tenant_id, role, through=theirs.as_of or date.max,
                                                posted_only=True)
        vendor = theirs.accounts.get(account_id)
        account_rows.append({"role": role, "account_id": account_id, "ours_minor": ours, "theirs_minor": vendor})
        if vendor != ours:
            mismatches.append({"kind": f"{role}_balance_differs", "account_id": account_id, "ours_minor": ours,
                               "theirs_minor": vendor, "amount_minor": (vendor or 0) - ours,
                               "detail": f"{ledger.system}'s {role} account {account_id} holds {vendor} "
                                         f"(minor units), our posted journal {ours}"})
    applied = await repository.posted_allocations(session, tenant_id, [i.invoice_id for i in invoices])
    invoice_rows = []
    for invoice in invoices:
        ours = invoice.total_minor - applied.get(invoice.invoice_id, 0)
        vendor = theirs.invoices.get(invoice.number)
        invoice_rows.append({"invoice_id": invoice.invoice_id, "number": invoice.number, "ours_minor": ours,
                             "theirs_minor": vendor})
        if vendor is None:
            mismatches.append({"kind": "invoice_missing", "invoice_id": invoice.invoice_id, "number": invoice.number,
                               "ours_minor": ours, "detail": f"{ledger.system} has no invoice {invoice.number}"})
        elif vendor != ours:
            mismatches.append({"kind": "invoice_balance_differs", "invoice_id": invoice.invoice_id,
                               "number": invoice.number, "ours_minor": ours, "theirs_minor": vendor,
                               "amount_minor": vendor - ours,
                               "detail": f"{ledger.system} shows {vendor} due on invoice {invoice.number}, "
                                         f"our posted payments leave {ours}"})
    return {"system": ledger.system, "as_of": theirs.as_of, "accounts": account_rows,
            "invoices": invoice_rows}, mismatches
