"""payment.initiated and payment.settled applied by run (the batch handler, as the consumer runtime
calls it during auto-pay) give the read model of the same events applied one by one, and a run of
one tenant leaves another tenant with the same payment and invoice ids untouched."""
from datetime import UTC, datetime

from sqlalchemy import text

from payloop.events.catalogue import CATALOGUE
from payloop.events.envelope import Envelope
from payloop.testing.plugin import running_service
from payloop_reporting.handlers import BATCH_HANDLERS
from payloop_reporting.service import SERVICE


def day(d: int, hour: int = 15) -> datetime:
    return datetime(2026, 3, d, hour, tzinfo=UTC)


def payout(book, payout_id: str, charges: list[tuple[str, int]]) -> None:
    items = [{"type": "charge", "payment_id": p, "gross_minor": gross, "fee_minor": 30,
              "net_minor": gross - 30} for p, gross in charges]
    book.add("payout.paid", day(9), {"payout_id": payout_id, "arrival_date": "2026-03-11", "currency": "USD",
                                     "amount_minor": sum(i["net_minor"] for i in items), "items": items})


def stories(tenant: str, other: str, blank_book):
    """Before the run, each tenant's invoices, a failed payment (an open exception) and payouts; then one
    run of initiated and settled events of both tenants, which share client, invoice and payment ids."""
    first, second = blank_book(tenant), blank_book(other)
    for invoice, client, total in (("I1", "A", 10_000), ("I2", "A", 30_000), ("I3", "B", 5_000)):
        first.invoice(invoice, client, total, "2026-03-01", "2026-03-31")
    first.payment("payment.failed", "P3", "B", [("I3", 5_000)], day(5), decline_code="insufficient_funds",
                  retryable=True, next_attempt_at=day(8).isoformat())
    payout(first, "PO1", [("P1", 10_000), ("PX", 7_000)])  # PX: a charge we never hear of
    payout(first, "PO2", [("P2", 10_000)])
    for invoice, total in (("I1", 20_000), ("I2", 30_000)):
        second.invoice(invoice, "A", total, "2026-03-01", "2026-03-31")
    second.payment("payment.failed", "P3", "A", [("I2", 30_000)], day(5), decline_code="insufficient_funds",
                   retryable=False, next_attempt_at=None)
    payout(second, "PO2", [("P2", 10_000)])
    setup = first.events + second.events

    told = [
        first.payment("payment.initiated", "P1", "A", [("I1", 10_000)], day(10, 14), origin="autopay"),
        second.payment("payment.initiated", "P1", "A", [("I1", 5_000)], day(10, 14), origin="autopay"),
        # P2 settles before its payment.initiated reaches us, and its settlement is told twice.
        first.payment("payment.settled", "P2", "A", [("I2", 10_000)], day(10, 15),
                      settled_at=day(10, 15).isoformat()),
        first.payment("payment.settled", "P1", "A", [("I1", 10_000)], day(10, 16)),
        first.payment("payment.initiated", "P2", "A", [("I2", 10_000)], day(10, 14), origin="autopay"),
        # I2 is paid in two parts.
        first.payment("payment.initiated", "P4", "A", [("I2", 15_000)], day(10, 14), origin="autopay"),
        first.payment("payment.settled", "P4", "A", [("I2", 15_000)], day(10, 17)),
        first.payment("payment.settled", "P3", "B", [("I3", 5_000)], day(10, 18),
                      settled_at=day(10, 18).isoformat()),
        second.payment("payment.settled", "P1", "A", [("I1", 5_000)], day(10, 16)),
        first.payment("payment.settled", "P2", "A", [("I2", 10_000)], day(10, 19),
                      settled_at=day(10, 15).isoformat()),
        second.payment("payment.initiated", "P9", "A", [("I2", 30_000)], day(10, 20), origin="autopay"),
    ]
    return setup, told


async def apply_as_one_run(session_factory, run: list[Envelope]) -> None:
    """One call of the batch handler for the whole run, in one transaction, as the runtime's fast path."""
    (handler,) = {BATCH_HANDLERS[event.type] for event in run}
    async with session_factory() as session, session.begin():
        await handler(session, [(event, CATALOGUE.parse(event.type, event.version, event.data))
                                for event in run])


_READ = {
    "payments": "SELECT payment_id, status, settled_at FROM payments WHERE tenant_id = :t ORDER BY 1",
    "invoices": "SELECT invoice_id, balance_minor, status, failed_attempts FROM invoices "
                "WHERE tenant_id = :t ORDER BY 1",
    "reductions": "SELECT invoice_id, source_id, amount_minor FROM invoice_reductions WHERE tenant_id = :t "
                  "ORDER BY 1, 2",
    "timeline": "SELECT kind, count(*) FROM timeline WHERE tenant_id = :t GROUP BY 1 ORDER BY 1",
    "exceptions": "SELECT exception_id, resolved_at, CASE kind WHEN 'unmatched_payout' THEN detail END "
                  "FROM exceptions WHERE tenant_id = :t ORDER BY 1",
}


async def read(session_factory, tenant: str) -> dict[str, list[tuple]]:
    async with session_factory() as session:
        return {name: [tuple(row) for row in await session.execute(text(sql), {"t": tenant})]
                for name, sql in _READ.items()}


async def test_a_run_applied_at_once_equals_its_events_one_by_one(infra, tenant, blank_book, apply_events,
                                                                  dump_read_models):
    other = f"{tenant}-other"
    setup, run = stories(tenant, other, blank_book)
    async with running_service(infra, SERVICE, consumers=False, relay=False) as batched, \
            running_service(infra, SERVICE, consumers=False, relay=False) as single:
        await apply_events(batched.app.state.session_factory, setup)
        await apply_as_one_run(batched.app.state.session_factory, run)
        await apply_events(single.app.state.session_factory, setup + run)
        for t in (tenant, other):
            assert (await dump_read_models(batched.app.state.session_factory, t)
                    == await dump_read_models(single.app.state.session_factory, t))
        mine = await read(batched.app.state.session_factory, tenant)
        theirs = await read(batched.app.state.session_factory, other)
    # The late payment.initiated of P2 does not undo its settlement; P3 settled after its failure.
    assert mine["payments"] == [("P1", "succeeded", day(10, 16)), ("P2", "succeeded", day(10, 15)),
                                ("P3", "succeeded", day(10, 18)), ("P4", "succeeded", day(10, 17))]
    assert mine["invoices"] == [("I1", 0, "paid", 0), ("I2", 5_000, "partially_paid", 0),
                                ("I3", 0, "paid", 0)]
    assert mine["reductions"] == [("I1", "P1", 10_000), ("I2", "P2", 10_000), ("I2", "P4", 15_000),
                                  ("I3", "P3", 5_000)]
    assert mine["timeline"] == [("invoice_created", 3), ("payment_failed", 1), ("payment_initiated", 3),
                                ("payment_settled", 5)]
    # PO2's only charge (P2) settled, so its exception is gone; PO1 still waits for PX.
    assert mine["exceptions"] == [("payment_failed:P3", day(10, 18), None),
                                  ("unmatched_payout:PO1", None, "No settled payment is known for: PX")]
    assert theirs["payments"] == [("P1", "succeeded", day(10, 16)), ("P3", "failed", None),
                                  ("P9", "processing", None)]
    assert theirs["invoices"] == [("I1", 15_000, "partially_paid", 0), ("I2", 30_000, "open", 1)]
    assert theirs["reductions"] == [("I1", "P1", 5_000)]
    assert theirs["timeline"] == [("invoice_created", 2), ("payment_failed", 1), ("payment_initiated", 2),
                                  ("payment_settled", 1)]
    assert theirs["exceptions"] == [("payment_failed:P3", None, None),
                                    ("unmatched_payout:PO2", None, "No settled payment is known for: P2")]


async def test_a_run_of_one_tenant_leaves_another_with_the_same_ids_alone(infra, tenant, blank_book,
                                                                          apply_events, dump_read_models):
    other = f"{tenant}-other"
    setup, run = stories(tenant, other, blank_book)
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        factory = client.app.state.session_factory
        await apply_events(factory, setup)
        before = await dump_read_models(factory, other)
        await apply_as_one_run(factory, [event for event in run if event.tenant_id == tenant])
        assert await dump_read_models(factory, other) == before
