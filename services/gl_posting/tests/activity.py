"""The activity the posting tests replay against each accounting simulator: events and polling helpers.

Shared by test_posting_quickbooks.py and test_posting_xero.py (conftest registers this module as
`gl_activity`, since the importlib import mode puts no test folder on sys.path).
"""
import asyncio
import uuid
from datetime import date

from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE
from payloop_gl_posting.handlers import HANDLERS

DAY = date.today()


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until `predicate()` is truthy; the timeout only bounds a broken run, nothing asserts on time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def tenant() -> str:
    return f"msp-{uuid.uuid4().hex[:8]}"


def invoice_event(t: str, invoice_id: str, number: str, total: int, client: str = "c1"):
    return new_event("invoice.created", tenant_id=t, client_id=client, producer="psa_ingest", data={
        "invoice_id": invoice_id, "psa": {"source": "connectwise", "external_id": invoice_id}, "number": number,
        "agreement": None, "currency": "USD", "issued_on": DAY.isoformat(), "due_on": DAY.isoformat(),
        "terms": "Net 30", "status": "open", "subtotal_minor": total, "tax_minor": 0, "total_minor": total,
        "balance_minor": total, "lines": []})


def payment_data(payment_id: str, amount: int, fee: int, allocations: list[tuple[str, int]],
                 surcharge: int = 0) -> dict:
    return {"payment_id": payment_id, "method": {"type": "card", "brand": "visa", "last4": "4242"},
            "amount_minor": amount, "currency": "USD", "fee_minor": fee, "surcharge_minor": surcharge,
            "allocations": [{"invoice_id": i, "amount_minor": a} for i, a in allocations],
            "processor": {"name": "stripe", "payment_intent_id": f"pi_{payment_id}", "charge_id": f"ch_{payment_id}"}}


def settled(t: str, payment_id: str, amount: int, fee: int, allocations, client: str = "c1", surcharge: int = 0):
    return new_event("payment.settled", tenant_id=t, client_id=client, producer="payments",
                     data=payment_data(payment_id, amount, fee, allocations, surcharge))


def refunded(t: str, payment_id: str, amount: int, fee: int, allocations, refund: int, client: str = "c1",
             surcharge: int = 0):
    return new_event("payment.refunded", tenant_id=t, client_id=client, producer="payments",
                     data={**payment_data(payment_id, amount, fee, allocations, surcharge),
                           "refund_id": f"re_{payment_id}", "refunded_minor": refund})


def disputed(t: str, payment_id: str, amount: int, fee: int, allocations, client: str = "c1",
             status: str = "needs_response", surcharge: int = 0):
    """The whole payment disputed; a surcharged one's convenience fee withdrawn with it, as Stripe does."""
    return new_event("payment.disputed", tenant_id=t, client_id=client, producer="payments",
                     data={**payment_data(payment_id, amount, fee, allocations, surcharge),
                           "dispute_id": f"dp_{payment_id}", "disputed_minor": amount, "status": status,
                           **({"disputed_surcharge_minor": surcharge} if surcharge else {})})


def payout(t: str, payout_id: str, items: list[tuple[str, str | None, int, int]]):
    rows = [{"type": kind, "payment_id": pid, "gross_minor": gross, "fee_minor": fee, "net_minor": gross - fee}
            for kind, pid, gross, fee in items]
    return new_event("payout.paid", tenant_id=t, producer="payments", data={
        "payout_id": payout_id, "arrival_date": DAY.isoformat(), "currency": "USD",
        "amount_minor": sum(r["net_minor"] for r in rows), "items": rows})


async def apply(client, *events) -> None:
    async with client.app.state.session_factory() as session, session.begin():
        for event in events:
            await HANDLERS[event.type](session, event, CATALOGUE.parse(event.type, event.version, event.data))


async def entries(client, headers, **params) -> list[dict]:
    return (await client.get("/v1/gl/entries", headers=headers, params=params)).json()["items"]


async def all_posted(client, headers, count: int):
    items = await entries(client, headers)
    return items if len(items) == count and all(e["state"] == "posted" for e in items) else None


async def exception_for(client, headers, reason: str):
    items = (await client.get("/v1/gl/exceptions", headers=headers)).json()["items"]
    return next((e for e in items if e["reason"] == reason), None)


# (invoice id, number, customer, total in cents)
INVOICES = [("inv-1", "1001", "Acme Dental", 100_000), ("inv-2", "1002", "Acme Dental", 120_000),
            ("inv-3", "1003", "Birch Legal", 30_000), ("inv-4", "1004", "Birch Legal", 80_000),
            ("inv-5", "1005", "Cobalt Clinic", 45_000), ("inv-6", "1006", "Cobalt Clinic", 60_000)]


def month_of_activity(t: str) -> list:
    """Payments (one partial, one overpaying), a partial refund, a lost dispute, a won dispute (its every
    status told, the won one twice) and three payouts with fees (the last one with the won dispute's
    withdrawal and return, and a processor adjustment that no payment put into clearing)."""
    p = {
        "p1": settled(t, "p1", 100_000, 2_930, [("inv-1", 100_000)]),
        "p2": settled(t, "p2", 50_000, 1_480, [("inv-2", 50_000)]),
        "p3": settled(t, "p3", 70_000, 560, [("inv-2", 70_000)]),
        "p4": settled(t, "p4", 35_000, 1_045, [("inv-3", 30_000)]),  # 50.00 overpaid -> unapplied credit
        "p5": settled(t, "p5", 80_000, 2_350, [("inv-4", 80_000)]),
        "p6": settled(t, "p6", 45_000, 1_335, [("inv-5", 45_000)]),
        "p7": settled(t, "p7", 60_000, 1_770, [("inv-6", 60_000)]),
    }
    return [*(invoice_event(t, i, n, total) for i, n, _, total in INVOICES), *p.values(),
            payout(t, "po_1", [("charge", "p1", 100_000, 2_930), ("charge", "p2", 50_000, 1_480)]),
            payout(t, "po_2", [("charge", "p3", 70_000, 560), ("charge", "p4", 35_000, 1_045),
                               ("charge", "p5", 80_000, 2_350)]),
            refunded(t, "p5", 80_000, 2_350, [("inv-4", 80_000)], 20_000),
            disputed(t, "p6", 45_000, 1_335, [("inv-5", 45_000)]),
            disputed(t, "p6", 45_000, 1_335, [("inv-5", 45_000)], status="lost"),
            *(disputed(t, "p3", 70_000, 560, [("inv-2", 70_000)], status=status)
              for status in ("needs_response", "under_review", "won", "won")),
            payout(t, "po_3", [("charge", "p6", 45_000, 1_335), ("charge", "p7", 60_000, 1_770),
                               ("refund", "p5", -20_000, 0), ("dispute", "p6", -45_000, 1_500),
                               ("dispute", "p3", -70_000, 1_500), ("dispute", "p3", 70_000, 0),
                               ("adjustment", None, -500, 0)])]  # the processor's own charge: 5.00


def processor_expense(payouts) -> int:
    """What the fee expense account should hold: fees plus the processor's own adjustments."""
    return sum(i["fee_minor"] - (i["gross_minor"] if i["type"] == "adjustment" else 0)
               for e in payouts for i in e.data["items"])


def books_total_differs(t: str) -> list:
    """An invoice whose total in the books (90.00, see BOOKS_TOTAL_DIFFERS) is not the PSA's (100.00), paid 90.00."""
    return [invoice_event(t, "inv-7", "1007", 10_000), settled(t, "p8", 9_000, 290, [("inv-7", 9_000)])]


BOOKS_TOTAL_DIFFERS = ("1007", "Delta Dental", "90.00")


def surcharged_activity(t: str) -> list:
    """A card payment of invoice 1001 (1,000.00) with a 30.00 convenience fee on top, so Stripe charged
    1,030.00 (fee 30.17 on that); a partial refund of 200.00 (payments refunds the invoice amount, never the
    fee); the payout of both, whose charge item's gross is what Stripe charged."""
    return [invoice_event(t, "inv-1", "1001", 100_000),
            settled(t, "p1", 100_000, 3_017, [("inv-1", 100_000)], surcharge=3_000),
            refunded(t, "p1", 100_000, 3_017, [("inv-1", 100_000)], 20_000, surcharge=3_000),
            payout(t, "po_1", [("charge", "p1", 103_000, 3_017), ("refund", "p1", -20_000, 0)])]


def surcharged_dispute(t: str, status: str) -> list:
    """A card payment of invoice 1001 (1,000.00) with a 30.00 convenience fee on top, disputed whole: Stripe
    withdraws 1,030.00 (and a 15.00 dispute fee) in the second payout, beside a payment of invoice 1002 (a
    payout, like a QuickBooks deposit, is not negative); a won dispute's 1,030.00 comes back in the third."""
    events = [invoice_event(t, "inv-1", "1001", 100_000), invoice_event(t, "inv-2", "1002", 120_000),
              settled(t, "p1", 100_000, 3_017, [("inv-1", 100_000)], surcharge=3_000),
              payout(t, "po_1", [("charge", "p1", 103_000, 3_017)]),
              disputed(t, "p1", 100_000, 3_017, [("inv-1", 100_000)], surcharge=3_000),
              disputed(t, "p1", 100_000, 3_017, [("inv-1", 100_000)], surcharge=3_000, status=status),
              settled(t, "p2", 120_000, 3_510, [("inv-2", 120_000)]),
              payout(t, "po_2", [("charge", "p2", 120_000, 3_510), ("dispute", "p1", -103_000, 1_500)])]
    if status == "won":
        events.append(payout(t, "po_3", [("dispute", "p1", 103_000, 0)]))
    return events


def assert_planted_mismatches(report: dict) -> None:
    """12.34 moved by hand from clearing to the bank, and invoice 1007 whose books say 10.00 less."""
    assert report["balanced"] is False
    found = {m["kind"]: m for m in report["mismatches"]}
    assert set(found) == {"clearing_balance_differs", "bank_balance_differs", "invoice_balance_differs"}, found
    assert found["clearing_balance_differs"]["amount_minor"] == -1_234
    assert found["bank_balance_differs"]["amount_minor"] == 1_234
    assert (found["invoice_balance_differs"]["number"], found["invoice_balance_differs"]["ours_minor"],
            found["invoice_balance_differs"]["theirs_minor"]) == ("1007", 1_000, 0)
