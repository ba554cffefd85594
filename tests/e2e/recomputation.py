"""Reporting's read models against a recomputation from the other services' own databases.

Reporting learns everything from events; the services that produced them keep their own truth. After a
drill both must agree for the tenant: the same invoices with the same totals, each invoice's balance
equal to what the payments service says is owed on it, the same settled payments, and the
same ledger entries posted by gl_posting. Returns what differs, so a failure names every mismatch.
"""
from __future__ import annotations

import asyncio
import time

import asyncpg


async def _rows(url: str, query: str, *args) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await connection.fetch(query, *args)
    finally:
        await connection.close()


def _owed(row: asyncpg.Record) -> int:
    return max(0, min(row["psa_balance_minor"], row["total_minor"] - row["credited_minor"] - row["collected_minor"]))


async def read_model_mismatches(databases: dict[str, str], tenant: str) -> list[str]:
    reporting = databases["reporting"]
    mismatches: list[str] = []

    def compare(what: str, ours: dict, theirs: dict) -> None:
        for key in sorted(set(ours) | set(theirs), key=str):
            if ours.get(key) != theirs.get(key):
                mismatches.append(f"{what} {key}: reporting {ours.get(key)!r}, source {theirs.get(key)!r}")

    # Invoices and what is owed on them by the payments service's own bookkeeping (what it collected,
    # net of refunds, disputes and returns; the PSA's balance also counts what was paid outside Payloop:
    # the smaller of the two is owed).
    source = await _rows(databases["payments"], """
        SELECT invoice_id, number, total_minor, credited_minor, collected_minor, psa_balance_minor FROM invoices
        WHERE tenant_id = $1 AND status <> 'void'""", tenant)
    read = await _rows(reporting, """
        SELECT invoice_id, number, total_minor, balance_minor FROM invoices
        WHERE tenant_id = $1 AND voided_at IS NULL""", tenant)
    compare("invoice", {r["invoice_id"]: (r["number"], r["total_minor"], r["balance_minor"]) for r in read},
            {r["invoice_id"]: (r["number"], r["total_minor"], _owed(r)) for r in source})

    # The invoices the PSA gave us, as psa_ingest last stored them.
    source = await _rows(databases["psa_ingest"], """
        SELECT id::text AS invoice_id, number, (data->>'total_minor')::bigint AS total_minor FROM psa_records
        WHERE tenant_id = $1 AND kind = 'invoice' AND data->>'status' <> 'void'""", tenant)
    compare("PSA invoice", {r["invoice_id"]: (r["number"], r["total_minor"]) for r in read},
            {r["invoice_id"]: (r["number"], r["total_minor"]) for r in source})

    # Settled payments that were not taken back (a dispute; an ACH return, which payments unsettles):
    # amount and fee.
    source = await _rows(databases["payments"], """
        SELECT id::text AS payment_id, amount_minor, fee_minor FROM payments
        WHERE tenant_id = $1 AND settled_at IS NOT NULL AND status <> 'disputed'""", tenant)
    read = await _rows(reporting, """
        SELECT payment_id, amount_minor, fee_minor FROM payments
        WHERE tenant_id = $1 AND settled_at IS NOT NULL AND status <> 'disputed'""", tenant)
    compare("payment", {r["payment_id"]: (r["amount_minor"], r["fee_minor"]) for r in read},
            {r["payment_id"]: (r["amount_minor"], r["fee_minor"]) for r in source})

    # Ledger entries gl_posting posted, with the accounting system's id.
    source = await _rows(databases["gl_posting"], """
        SELECT id::text AS entry_id, purpose, external_id FROM gl_entries
        WHERE tenant_id = $1 AND state = 'posted'""", tenant)
    read = await _rows(reporting, "SELECT entry_id, purpose, external_id FROM gl_postings WHERE tenant_id = $1",
                       tenant)
    compare("ledger entry", {r["entry_id"]: (r["purpose"], r["external_id"]) for r in read},
            {r["entry_id"]: (r["purpose"], r["external_id"]) for r in source})
    return mismatches


async def settled_mismatches(databases: dict[str, str], tenant: str, timeout: float = 60.0) -> list[str]:
    """The mismatches once reporting has caught up (it applies events shortly after the sources commit):
    an empty list as soon as they agree, else whatever still differs when the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        mismatches = await read_model_mismatches(databases, tenant)
        if not mismatches or time.monotonic() > deadline:
            return mismatches
        await asyncio.sleep(0.5)
