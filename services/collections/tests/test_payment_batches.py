"""`payment.initiated` and `payment.settled` applied a run at a time have the effect of the single
handlers applied one by one (the runtime falls back to those when a batch fails), tenant by tenant."""
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import text

from payloop.events import new_event

START = datetime(2026, 3, 2, 15, tzinfo=UTC)
DUE = date(2026, 3, 1)


def day(n: int) -> datetime:
    return START + timedelta(days=n)


def payment(type: str, tenant: str, client: str | None, payment_id: str, allocations: dict[str, int],
            at: datetime):
    data: dict[str, Any] = {
        "payment_id": payment_id, "method": {"type": "card", "brand": "visa", "last4": "4242"},
        "amount_minor": sum(allocations.values()), "currency": "USD", "processor": {},
        "allocations": [{"invoice_id": i, "amount_minor": a} for i, a in allocations.items()]}
    if type == "payment.settled":
        data["settled_at"] = at.isoformat()
    else:
        data["origin"] = "autopay"
    return new_event(type, tenant_id=tenant, client_id=client, data=data, producer="test", occurred_at=at)


async def book(h, tenant: str, invoices: dict[str, tuple[str, int, date]]) -> None:
    """The tenant's clients and open invoices (invoice id -> client, total, due date)."""
    at_tenant = replace(h, tenant=tenant, invoices={})
    for client in dict.fromkeys(c for c, _, _ in invoices.values()):
        await at_tenant.add_client(client)
    for invoice_id, (client, total, due_on) in invoices.items():
        await at_tenant.add_invoice(client, due_on, total, invoice_id=invoice_id)


def autopay_run(a: str, b: str) -> tuple[list, list]:
    """Tenants `a` and `b` (both with an invoice `inv-1`): the initiated run, then the settled run."""
    initiated = [
        payment("payment.initiated", a, "c1", "pay-1", {"inv-1": 4_000}, day(0)),
        payment("payment.initiated", a, "c2", "pay-3", {"inv-3": 9_000}, day(0) + timedelta(minutes=1)),
        payment("payment.initiated", b, "c1", "pay-b1", {"inv-1": 7_000}, day(0) + timedelta(minutes=2)),
        payment("payment.initiated", a, "c1", "pay-2", {"inv-1": 5_000, "inv-2": 5_000},
                day(0) + timedelta(minutes=3)),
    ]
    settled = [
        payment("payment.settled", a, "c1", "pay-1", {"inv-1": 4_000}, day(1)),  # partial
        payment("payment.settled", a, "c2", "pay-3", {"inv-3": 9_000}, day(1)),  # more than owed
        payment("payment.settled", b, "c1", "pay-b1", {"inv-1": 7_000}, day(2)),
        payment("payment.settled", a, None, "pay-4", {"inv-4": 3_000}, day(2)),  # no client: not marked paid
        payment("payment.settled", a, "c1", "pay-2", {"inv-2": 5_000, "inv-1": 5_000}, day(3)),  # inv-1 paid
        payment("payment.settled", a, "c1", "pay-1", {"inv-1": 4_000}, day(4)),  # a repeat: nothing new
        payment("payment.settled", a, "c3", "pay-4", {"inv-4": 3_000}, day(5)),  # a repeat, with the client
    ]
    return initiated, settled


async def prepare(h, a: str, b: str) -> None:
    """Both tenants' books; `inv-1` of `a` had 1,000 collected before the run."""
    await book(h, a, {"inv-1": ("c1", 10_000, DUE), "inv-2": ("c1", 5_000, DUE + timedelta(days=5)),
                      "inv-3": ("c2", 8_000, DUE), "inv-4": ("c3", 3_000, DUE)})
    await book(h, b, {"inv-1": ("c1", 7_000, DUE)})
    earlier = payment("payment.settled", a, "c1", "pay-0", {"inv-1": 1_000}, day(-1))
    await h.apply(earlier.type, None, event=earlier)


async def state(h, tenants: dict[str, str]) -> dict[str, Any]:
    """What the payments left, per tenant name in `tenants` (name -> tenant id), ids made comparable."""
    name = {tenant_id: n for n, tenant_id in tenants.items()}
    params = {"tenants": list(tenants.values())}
    async with h.factory() as session:
        invoices = (await session.execute(text(
            "SELECT tenant_id, invoice_id, status, paid_on, payment_in_flight_id, payment_in_flight_since, "
            "retry_at, autopay_failed FROM invoices WHERE tenant_id = ANY(:tenants) ORDER BY 1, 2"), params)
                    ).all()
        payments = (await session.execute(text(
            "SELECT tenant_id, invoice_id, payment_id, amount_minor, settled_on FROM invoice_payments "
            "WHERE tenant_id = ANY(:tenants) ORDER BY 1, 2, 3"), params)).all()
        timeline = (await session.execute(text(
            "SELECT tenant_id, client_id, invoice_id, kind, detail FROM timeline "
            "WHERE tenant_id = ANY(:tenants) ORDER BY id"), params)).all()
        behaviour = (await session.execute(text(
            "SELECT tenant_id, client_id, samples, average_days_to_pay, drifting FROM client_behaviour "
            "WHERE tenant_id = ANY(:tenants) ORDER BY 1, 2"), params)).all()
    return {
        "invoices": {(name[t], i): rest for t, i, *rest in invoices},
        "payments": [(name[t], *rest) for t, *rest in payments],
        # Per client, in the order written: clients' entries interleave differently one by one.
        "timeline": sorted(((name[t], c, i, kind, detail) for t, c, i, kind, detail in timeline),
                           key=lambda row: row[:2]),
        "behaviour": [(name[t], *rest) for t, *rest in behaviour],
    }


async def test_a_run_of_payments_has_the_effect_of_its_events_one_by_one(make_harness):
    async with make_harness(START) as h:
        batch = {"a": f"{h.tenant}-batch-a", "b": f"{h.tenant}-batch-b"}
        single = {"a": f"{h.tenant}-single-a", "b": f"{h.tenant}-single-b"}
        for tenants in (batch, single):
            await prepare(h, tenants["a"], tenants["b"])

        batch_initiated, batch_settled = autopay_run(batch["a"], batch["b"])
        single_initiated, single_settled = autopay_run(single["a"], single["b"])
        await h.apply_batch(batch_initiated)
        for event in single_initiated:
            await h.apply(event.type, None, event=event)
        in_flight = await state(h, batch)
        assert in_flight == await state(h, single)
        minute = timedelta(minutes=1)
        assert {key: (row[2], row[3]) for key, row in in_flight["invoices"].items()} == {
            ("a", "inv-1"): ("pay-2", day(0) + 3 * minute), ("a", "inv-2"): ("pay-2", day(0) + 3 * minute),
            ("a", "inv-3"): ("pay-3", day(0) + minute), ("a", "inv-4"): (None, None),
            ("b", "inv-1"): ("pay-b1", day(0) + 2 * minute)}

        await h.apply_batch(batch_settled)
        for event in single_settled:
            await h.apply(event.type, None, event=event)
        settled = await state(h, batch)
        assert settled == await state(h, single)

        # Nothing in flight any more; each invoice paid on the day of the payment that paid it off.
        assert settled["invoices"] == {
            ("a", "inv-1"): ["open", day(3).date(), None, None, None, False],
            ("a", "inv-2"): ["open", day(3).date(), None, None, None, False],
            ("a", "inv-3"): ["open", day(1).date(), None, None, None, False],
            ("a", "inv-4"): ["open", day(5).date(), None, None, None, False],
            ("b", "inv-1"): ["open", day(2).date(), None, None, None, False]}
        assert settled["payments"] == [
            ("a", "inv-1", "pay-0", 1_000, day(-1).date()), ("a", "inv-1", "pay-1", 4_000, day(1).date()),
            ("a", "inv-1", "pay-2", 5_000, day(3).date()), ("a", "inv-2", "pay-2", 5_000, day(3).date()),
            ("a", "inv-3", "pay-3", 9_000, day(1).date()), ("a", "inv-4", "pay-4", 3_000, day(2).date()),
            ("b", "inv-1", "pay-b1", 7_000, day(2).date())]
        stopped = {"reason": "paid"}
        assert settled["timeline"] == [
            ("a", "c1", "inv-1", "stopped", stopped), ("a", "c1", "inv-2", "stopped", stopped),
            ("a", "c2", "inv-3", "stopped", stopped), ("a", "c3", "inv-4", "stopped", stopped),
            ("b", "c1", "inv-1", "stopped", stopped)]
        assert [(t, c, samples) for t, c, samples, _, _ in settled["behaviour"]] == [
            ("a", "c1", 2), ("a", "c2", 1), ("a", "c3", 1), ("b", "c1", 1)]


async def test_tenants_with_the_same_invoice_ids_do_not_touch_each_other(make_harness):
    async with make_harness(START) as h:
        a, b = f"{h.tenant}-a", f"{h.tenant}-b"
        for tenant in (a, b):
            await book(h, tenant, {"inv-1": ("c1", 10_000, DUE)})
        await h.apply_batch([payment("payment.settled", a, "c1", "pay-a0", {"inv-1": 1_000}, day(0))])
        await h.apply_batch([payment("payment.initiated", a, "c1", "pay-a", {"inv-1": 4_000}, day(0)),
                             payment("payment.initiated", b, "c1", "pay-b", {"inv-1": 6_000}, day(0))])
        # Together the tenants' payments would pay off an `inv-1`; each tenant's alone does not.
        await h.apply_batch([payment("payment.settled", b, "c1", "pay-b", {"inv-1": 6_000}, day(1)),
                             payment("payment.settled", b, "c1", "pay-b2", {"inv-1": 3_000}, day(1))])

        after = await state(h, {"a": a, "b": b})
        assert after["invoices"] == {("a", "inv-1"): ["open", None, "pay-a", day(0), None, False],
                                     ("b", "inv-1"): ["open", None, None, None, None, False]}
        assert after["payments"] == [("a", "inv-1", "pay-a0", 1_000, day(0).date()),
                                     ("b", "inv-1", "pay-b", 6_000, day(1).date()),
                                     ("b", "inv-1", "pay-b2", 3_000, day(1).date())]
        assert after["timeline"] == []
