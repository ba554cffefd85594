"""The scheduler plans an invoice only when its time has come, and any change to what its plan is made
of (migration 0006's triggers) has it planned again at the next tick."""
import asyncio
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from payloop_collections import repository

NY = ZoneInfo("America/New_York")


async def due(h) -> list[str]:
    async with h.factory() as session:
        clients = [c for group in await repository.clients_to_plan(session, h.tenant, h.clock.now(),
                                                                   invoices_at_most=1_000) for c in group]
        return [invoice.invoice_id
                for invoice, _, _ in await repository.invoices_to_plan(session, h.tenant, h.clock.now(), clients)]


async def next_plan_at(h, invoice_id: str) -> datetime:
    async with h.factory() as session:
        return await session.scalar(text("SELECT next_plan_at FROM invoices WHERE tenant_id = :t AND invoice_id = :i"),
                                    {"t": h.tenant, "i": invoice_id})


async def test_a_tick_plans_an_invoice_again_when_its_step_comes_not_before(make_harness, sink):
    async with make_harness(datetime(2026, 3, 2, 8, 30, tzinfo=NY)) as h:  # Monday, before the send hour
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        invoice = await h.add_invoice("c1", date(2026, 3, 5), 10_000)  # step -3: Monday 2 March 09:00
        assert await due(h) == [invoice]

        await h.tick()
        assert await due(h) == []  # outside the sending hours: looked at again at 09:00
        assert await next_plan_at(h, invoice) == datetime(2026, 3, 2, 9, tzinfo=NY)
        h.clock.set(datetime(2026, 3, 2, 9, 1, tzinfo=NY))
        assert await due(h) == [invoice]
        await h.tick()
        assert len(sink.messages) == 1
        await h.tick()  # the step decided is in place: the invoice waits for its next step
        later = await next_plan_at(h, invoice)
        assert h.clock.now() < later <= h.clock.now() + timedelta(hours=1)
        assert await due(h) == []


async def test_a_change_to_what_a_plan_is_made_of_has_the_invoice_planned_at_the_next_tick(
        make_harness, sink, token):
    async with make_harness(datetime(2026, 3, 9, 10, tzinfo=NY)) as h:  # Monday
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        invoice = await h.add_invoice("c1", date(2026, 3, 31), 10_000)
        headers = token(h.tenant, "collections:write")

        async def planned_again_after(change) -> None:
            await h.tick()
            assert await due(h) == []
            await change()
            assert await due(h) == [invoice], change.__name__

        async def partial_payment():
            await h.settle("c1", invoice, 2_500)

        async def client_paused():
            assert (await h.client.post("/v1/collections/clients/c1/pause", json={},
                                        headers=headers)).status_code == 200

        async def promise_made():
            assert (await h.client.post("/v1/collections/clients/c1/promises", json={
                "promised_on": "2026-03-20", "amount_minor": 7_500}, headers=headers)).status_code == 201

        async def policy_changed():
            assert (await h.client.put("/v1/collections/policies/gentle", json={"is_default": True},
                                       headers=headers)).status_code == 200

        async def holidays_changed():
            await h.tenant_profile(timezone="America/Chicago")

        async def invoice_updated():
            await h.apply("invoice.updated", {**{k: v for k, v in h.invoices[invoice].items() if k != "client_id"},
                                              "due_on": "2026-03-12",
                                              "changes": {"due_on": {"from": "2026-03-31", "to": "2026-03-12"}}}, "c1")

        for change in (partial_payment, client_paused, promise_made, policy_changed, holidays_changed,
                       invoice_updated):
            await planned_again_after(change)


async def test_a_plan_made_before_a_change_does_not_hide_the_change(make_harness, sink):
    async with make_harness(datetime(2026, 3, 9, 10, tzinfo=NY)) as h:
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        invoice = await h.add_invoice("c1", date(2026, 3, 31), 10_000)
        async with h.factory() as session:
            [(_, _, version)] = await repository.invoices_to_plan(session, h.tenant, h.clock.now(), ["c1"])
        await h.settle("c1", invoice, 2_500)  # lands between the scheduler's read and its write
        async with h.factory() as session, session.begin():
            await repository.set_next_plan(session, h.tenant, {invoice: (h.clock.now() + timedelta(hours=1), version)})
        assert await due(h) == [invoice]


async def test_a_send_deferred_by_the_days_email_is_planned_again_on_the_clients_next_day(make_harness, sink):
    async with make_harness(datetime(2026, 3, 2, 10, tzinfo=NY)) as h:  # Monday
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        await h.add_invoice("c1", date(2026, 3, 5), 10_000)
        await h.tick()
        later = await h.add_invoice("c1", date(2026, 3, 5), 20_000)
        await h.tick()  # its step is due too, but the client had its email today
        assert len(sink.messages) == 1 and await due(h) == []
        assert await next_plan_at(h, later) == datetime(2026, 3, 3, tzinfo=NY)
        h.clock.set(datetime(2026, 3, 3, 9, 5, tzinfo=NY))
        await h.tick()
        assert len(sink.messages) == 2 and "N" + later in sink.messages[1].parsed["subject"]


async def test_a_tick_plans_whole_clients_a_few_invoices_at_a_time_and_reaches_every_one(make_harness, sink):
    async with make_harness(datetime(2026, 3, 2, 10, tzinfo=NY), plan_at_once=3) as h:  # step -3 due now
        await h.tenant_profile()
        books: dict[str, list[str]] = {}
        for client, count in (("c1", 2), ("c2", 2), ("c3", 1), ("c4", 4)):
            await h.add_client(client, [f"ap@{client}.example"])
            books[client] = [await h.add_invoice(client, date(2026, 3, 5), 10_000 * (n + 1)) for n in range(count)]
        async with h.factory() as session:
            groups = await repository.clients_to_plan(session, h.tenant, h.clock.now(), invoices_at_most=3)
        assert groups == [["c1"], ["c2", "c3"], ["c4"]]  # whole clients; one even when it alone is more

        await h.tick()
        await h.tick()  # with their steps recorded, every invoice gets its next planning time
        assert await due(h) == []
        assert sorted(sent.rcpt_tos[0] for sent in sink.messages) == [f"ap@{c}.example" for c in books]
        for sent in sink.messages:  # one email per client, naming each of its invoices: no client was split
            client = sent.rcpt_tos[0].split("@")[1].split(".")[0]
            assert all("N" + invoice in sent.body("plain") for invoice in books[client])


async def test_the_scheduler_skips_an_invoice_being_changed_instead_of_waiting_for_it(make_harness, sink):
    """A client's change locks its invoices (the trigger) in an order of its own; waiting for those
    locks while holding others is how the scheduler deadlocked with the consumer during an import."""
    async with make_harness(datetime(2026, 3, 9, 10, tzinfo=NY)) as h:
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        busy = await h.add_invoice("c1", date(2026, 3, 31), 10_000)
        free = await h.add_invoice("c1", date(2026, 3, 31), 20_000)
        async with h.factory() as session:
            read = {invoice.invoice_id: version for invoice, _, version
                    in await repository.invoices_to_plan(session, h.tenant, h.clock.now(), ["c1"])}
        later = h.clock.now() + timedelta(hours=1)
        async with h.factory() as changing, changing.begin():
            await changing.execute(text("SELECT 1 FROM invoices WHERE tenant_id = :t AND invoice_id = :i FOR UPDATE"),
                                   {"t": h.tenant, "i": busy})
            async with h.factory() as session, session.begin():
                await asyncio.wait_for(repository.set_next_plan(
                    session, h.tenant, {i: (later, version) for i, version in read.items()}), 5)
        assert await next_plan_at(h, free) == later
        assert await due(h) == [busy]  # planned again at the next tick


async def test_another_invoice_paid_leaves_the_clients_other_plans_alone(make_harness, sink):
    """Each payment recomputes the client's behaviour; only a change of its drift flag changes a plan."""
    async with make_harness(datetime(2026, 3, 9, 10, tzinfo=NY)) as h:
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        waiting = await h.add_invoice("c1", date(2026, 3, 31), 10_000)
        paid = [await h.add_invoice("c1", date(2026, 3, 1), 5_000, issued_on=date(2026, 2, 1)) for _ in range(3)]
        await h.tick()
        await h.tick()
        assert await due(h) == []
        await h.settle("c1", paid[0], 5_000)
        await h.settle("c1", paid[1], 5_000)  # two samples: the averages move, drift stays false
        assert waiting not in await due(h)  # (the paid ones are, to be planned out of the sequence)
        async with h.factory() as session:
            drifting = await session.scalar(text("SELECT drifting FROM clients WHERE tenant_id = :t AND client_id = 'c1'"),
                                            {"t": h.tenant})
        assert drifting is False


async def test_a_client_row_written_with_the_values_it_had_changes_no_plan(make_harness, sink):
    async with make_harness(datetime(2026, 3, 9, 10, tzinfo=NY)) as h:
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        invoice = await h.add_invoice("c1", date(2026, 3, 31), 10_000)
        await h.tick()
        assert await due(h) == []
        client = {"t": h.tenant}
        async with h.factory() as session, session.begin():
            await session.execute(text("UPDATE clients SET drifting = drifting, updated_at = now() "
                                       "WHERE tenant_id = :t AND client_id = 'c1'"), client)
        assert await due(h) == []
        async with h.factory() as session, session.begin():
            await session.execute(text("UPDATE clients SET drifting = NOT drifting, updated_at = now() "
                                       "WHERE tenant_id = :t AND client_id = 'c1'"), client)
        assert await due(h) == [invoice]
