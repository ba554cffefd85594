"""The database sums a client's paid invoices exactly as the behaviour's definition does."""
import random
from datetime import UTC, date, datetime, timedelta

from payloop.events import new_event

from payloop_collections import repository
from payloop_collections.behaviour import WINDOW_DAYS, PaidInvoice, totals


async def test_paid_totals_from_the_database_equal_the_definition_window_boundary_included(make_harness):
    draw = random.Random(7)
    async with make_harness(datetime(2026, 6, 1, 12, tzinfo=UTC)) as h:
        await h.tenant_profile()
        history: dict[str, list[PaidInvoice]] = {"late": [], "mixed": [], "single": []}
        newest = date(2026, 5, 1)
        for client, count in (("late", 12), ("mixed", 30), ("single", 1)):
            for k in range(count):
                issued = newest - timedelta(days=draw.randint(0, 400))
                paid_on = min(issued + timedelta(days=draw.randint(0, 70)), newest)
                history[client].append(PaidInvoice(issued, issued + timedelta(days=30), paid_on))
        # One paid exactly `WINDOW_DAYS` before the newest payment: the baseline's, not the recent window's.
        history["mixed"] += [PaidInvoice(newest - timedelta(days=WINDOW_DAYS + 20), newest - timedelta(days=WINDOW_DAYS),
                                         newest - timedelta(days=WINDOW_DAYS)),
                             PaidInvoice(newest - timedelta(days=10), newest + timedelta(days=20), newest)]
        await h.apply_batch([
            new_event("invoice.created", tenant_id=h.tenant, client_id=client, producer="test", occurred_at=h.clock.now(),
                      data={"invoice_id": f"{client}-{k}", "psa": {"source": "connectwise", "external_id": f"{client}-{k}"},
                            "number": f"N-{client}-{k}", "agreement": None, "currency": "USD",
                            "issued_on": p.issued_on.isoformat(), "due_on": p.due_on.isoformat(), "terms": "Net 30",
                            "status": "paid", "subtotal_minor": 10_000, "tax_minor": 0, "total_minor": 10_000,
                            "balance_minor": 0, "lines": [], "paid_on": p.paid_on.isoformat()})
            for client, paid in history.items() for k, p in enumerate(paid)])

        async with h.factory() as session:
            stored = await repository.paid_totals(session, h.tenant, [*history, "none"], WINDOW_DAYS)
        assert stored == {client: totals(paid) for client, paid in history.items()}
        assert 0 < stored["mixed"].recent < stored["mixed"].samples
