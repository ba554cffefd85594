"""Money taken back after it was collected: a chargeback reopens what the payment paid and a won dispute
closes it again; a returned ACH debit reopens it and its re-presentment closes it. Any order and any
repetition of the events gives the same balances."""
import random
from datetime import UTC, datetime

from sqlalchemy import text

from payloop.testing.plugin import running_service
from payloop_reporting.service import SERVICE


def day(d: int) -> datetime:
    return datetime(2026, 3, d, 15, tzinfo=UTC)


async def balances(client, tenant: str) -> dict[str, tuple[int, str]]:
    async with client.app.state.session_factory() as session:
        rows = await session.execute(text(
            "SELECT invoice_id, balance_minor, status FROM invoices WHERE tenant_id = :t"), {"t": tenant})
        return {r.invoice_id: (r.balance_minor, r.status) for r in rows}


async def test_chargebacks_and_returns_reopen_what_they_took_and_close_again(infra, tenant, blank_book,
                                                                          apply_events):
    b = blank_book(tenant)
    for invoice in ("CB", "WON", "ACH"):
        b.invoice(invoice, "A", 20_000, "2026-02-01", "2026-03-03")
    b.payment("payment.settled", "P-CB", "A", [("CB", 20_000)], day(3))
    b.payment("payment.settled", "P-WON", "A", [("WON", 20_000)], day(3))
    b.payment("payment.settled", "P-ACH", "A", [("ACH", 20_000)], day(3), method={"type": "ach"})
    # A chargeback of part of a payment, lost; a full one, won; an inquiry that withdrew nothing.
    b.payment("payment.disputed", "P-CB", "A", [("CB", 20_000)], day(5), dispute_id="dp_cb",
              disputed_minor=7_500, status="needs_response")
    b.payment("payment.disputed", "P-CB", "A", [("CB", 20_000)], day(20), dispute_id="dp_cb",
              disputed_minor=7_500, status="lost")
    b.payment("payment.disputed", "P-WON", "A", [("WON", 20_000)], day(5), dispute_id="dp_won",
              disputed_minor=20_000, status="needs_response")
    b.payment("payment.disputed", "P-WON", "A", [("WON", 20_000)], day(25), dispute_id="dp_won",
              disputed_minor=20_000, status="won")
    b.payment("payment.disputed", "P-WON", "A", [("WON", 20_000)], day(4), dispute_id="dp_inquiry",
              disputed_minor=20_000, status="warning_needs_response")
    # The bank returns the debit (R01), and the re-presentment settles as the payment's attempt 2.
    b.payment("payment.disputed", "P-ACH", "A", [("ACH", 20_000)], day(7), dispute_id="return:py_1",
              disputed_minor=20_000, status="returned", method={"type": "ach"})
    b.payment("payment.settled", "P-ACH", "A", [("ACH", 20_000)], day(12), attempt=2, method={"type": "ach"})
    expected = {"CB": (7_500, "partially_paid"), "WON": (0, "paid"), "ACH": (0, "paid")}

    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, b.events)
        assert await balances(client, tenant) == expected
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        events = list(reversed(b.events)) + random.Random(3).sample(b.events, len(b.events))
        await apply_events(client.app.state.session_factory, events)
        assert await balances(client, tenant) == expected

    # Before the re-presentment, the returned debit is owed again in full.
    returned_only = [e for e in b.events if not (e.type == "payment.settled" and e.data.get("attempt") == 2)]
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, returned_only)
        assert (await balances(client, tenant))["ACH"] == (20_000, "open")
