"""The reconciliation report of a tenant and period: what was collected, what reached the books.

From our journal: every settled payment posted, every payout deposited (and for the payout's
amount), the clearing account back to zero once payouts are in, fees as expense; every mismatch
listed with the entry it concerns.
"""
from __future__ import annotations

from datetime import date
from typing import get_args

from sqlalchemy.ext.asyncio import AsyncSession

from payloop_gl_posting import repository
from payloop_gl_posting.journal import Purpose


async def report(session: AsyncSession, tenant_id: str, start: date, end: date) -> dict:
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
    return {
        "tenant_id": tenant_id, "period_start": start, "period_end": end, "currencies": currencies,
        "payments": totals["payment"], "deposits": totals["deposit"], "refunds": totals["refund"],
        "disputes": totals["dispute"], "disputes_won": totals["dispute_won"], "fees_minor": fees,
        "clearing_balance_minor": clearing_journal, "clearing_posted_balance_minor": clearing_posted,
        "balanced": not mismatches and clearing_journal == 0,
        "mismatches": mismatches,
    }
