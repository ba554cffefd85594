"""`payment.settled` applied as a run (the consumer's batch handler) journals exactly what the events
applied one by one journal: the same entries, lines and order, a repeat skipped with its lines."""
from gl_activity import apply, entries, settled, tenant

from payloop.events.catalogue import CATALOGUE
from payloop.testing.plugin import running_service
from payloop_gl_posting.handlers import BATCH_HANDLERS
from payloop_gl_posting.service import SERVICE


def _run(t: str) -> list:
    first = settled(t, "p1", 100_000, 2_930, [("inv-1", 100_000)])
    return [first,
            settled(t, "p2", 35_000, 1_045, [("inv-2", 30_000)]),  # 50.00 overpaid -> unapplied credit
            settled(t, "p3", 103_000, 3_020, [("inv-3", 100_000)], surcharge=3_000),
            settled(t, "p4", 20_000, 610, [("inv-4", 12_000), ("inv-5", 8_000)], client="c2"),
            first]  # told again in the same run: journaled once


async def _apply_as_run(client, events) -> None:
    async with client.app.state.session_factory() as session, session.begin():
        await BATCH_HANDLERS["payment.settled"](
            session, [(e, CATALOGUE.parse(e.type, e.version, e.data)) for e in events])


def _shape(journal: list[dict]) -> list[tuple]:
    return [(e["purpose"], e["subject_id"], tuple((line["account"], line["amount_minor"]) for line in e["lines"]))
            for e in journal]


async def test_a_run_of_settlements_journals_what_the_events_one_by_one_journal(infra, token):
    one_by_one, as_run = tenant(), tenant()
    async with running_service(infra, SERVICE, consumers=False) as client:
        await apply(client, *_run(one_by_one))
        run = _run(as_run)
        await _apply_as_run(client, run)
        await _apply_as_run(client, run[:2])  # a redelivered run adds nothing

        expected = await entries(client, token(one_by_one, "admin"))
        journal = await entries(client, token(as_run, "admin"))
        assert _shape(journal) == _shape(expected)
        assert _shape(journal) == [
            ("payment", "p1", (("clearing", 100_000), ("receivable", -100_000))),
            ("payment", "p2", (("clearing", 35_000), ("receivable", -30_000), ("client_credit", -5_000))),
            ("payment", "p3", (("clearing", 103_000), ("receivable", -100_000), ("client_credit", -3_000))),
            ("convenience_fee", "p3", (("clearing", 3_000), ("convenience_fee", -3_000))),
            ("payment", "p4", (("clearing", 20_000), ("receivable", -12_000), ("receivable", -8_000))),
        ]
        assert {e["state"] for e in journal} == {"pending"}
