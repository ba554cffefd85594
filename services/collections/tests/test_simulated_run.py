"""Sixty simulated days over 40 clients: mixed auto-pay, disputes, promises and payments.

The clock walks through each day (local ticks at 06, 10, 15 and 22 in New York, across the DST
change); events arrive at noon. Everything that goes out is read back from a real SMTP server.
"""
import re
from collections import defaultdict
from datetime import date, datetime, timedelta
from email.utils import parsedate_to_datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text

from payloop.checkout_links import verify_checkout_token

NY = ZoneInfo("America/New_York")
START = date(2026, 3, 2)
DAYS = 60
MANUAL, AUTOPAY, DISPUTE, PROMISE, PAYER = range(0, 10), range(10, 18), range(18, 26), range(26, 32), range(32, 40)
SECOND_INVOICE = range(0, 4)  # a second invoice due a week later: its emails must be consolidated


def business(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def due_of(i: int) -> date:
    return date(2026, 3, 5) + timedelta(days=i % 8)


def local(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=NY)


async def test_sixty_days_over_forty_clients(make_harness, sink, token):
    async with make_harness(local(START, 0)) as h:
        await h.tenant_profile(display_name="Acme IT")
        amounts: dict[str, int] = {}
        events: dict[date, list] = defaultdict(list)
        paid_at: dict[str, datetime] = {}
        for i in range(40):
            cid = f"c{i:02d}"
            await h.add_client(cid, [f"ap@{cid}.example"])
            if i in AUTOPAY:
                await h.apply("autopay.changed", {"enrolled": True, "payment_method_id": "pm_1"}, cid)
            due = due_of(i)
            inv = await h.add_invoice(cid, due, 10_000 + 137 * i, invoice_id=f"inv-{cid}-a")
            amounts[inv] = 10_000 + 137 * i
            if i in SECOND_INVOICE:
                second = await h.add_invoice(cid, due + timedelta(days=7), 5_005 + i, invoice_id=f"inv-{cid}-b")
                amounts[second] = 5_005 + i
            if i in DISPUTE:
                events[due + timedelta(days=1)].append(("flag", cid, inv, True))
                events[due + timedelta(days=10)].append(("flag", cid, inv, False))
            if i in PROMISE:
                events[due + timedelta(days=1)].append(("promise", cid, inv, due + timedelta(days=9)))
            if i in PAYER:
                events[due + timedelta(days=5)].append(("pay", cid, inv, None))

        for offset in range(DAYS):
            day = START + timedelta(days=offset)
            for hour in (6, 10, 12, 15, 22):
                h.clock.set(local(day, hour))
                if hour == 12:
                    for kind, cid, inv, arg in events.get(day, []):
                        if kind == "flag":
                            await h.apply("ticket.flagged", {
                                "ticket_id": f"t-{cid}", "psa": {"source": "connectwise", "external_id": cid},
                                "invoice_ids": [inv], "open": arg}, cid)
                        elif kind == "promise":
                            response = await h.client.post(
                                f"/v1/collections/clients/{cid}/promises",
                                json={"promised_on": arg.isoformat(), "amount_minor": amounts[inv],
                                      "invoice_ids": [inv]},
                                headers=token(h.tenant, "collections:write"))
                            assert response.status_code == 201, response.text
                        else:
                            await h.settle(cid, inv, amounts[inv])
                            paid_at[cid] = h.clock.now()
                    continue
                await h.tick()

        sent = defaultdict(list)  # client -> [(local datetime, message)]
        for message in sink.messages:
            parsed = message.parsed
            sent[parsed["X-Payloop-Client"]].append(
                (parsedate_to_datetime(parsed["Date"]).astimezone(NY), message))

        for cid, items in sent.items():
            days = [when.date() for when, _ in items]
            assert len(days) == len(set(days)), f"{cid} got two emails on one day: {days}"
            for when, message in items:
                assert when.weekday() < 5 and 9 <= when.hour < 20, f"{cid} emailed at {when}"
                body = message.body("plain")
                listed = re.findall(r"Invoice N(\S+) - ([\d,]+\.\d\d) USD", body)
                assert listed, body
                for invoice_id, shown in listed:
                    balance = amounts[invoice_id]
                    assert shown == f"{balance // 100:,}.{balance % 100:02d}"
                link = re.search(r"http://pay\.test/checkout/(\S+)", body).group(1)
                grant = verify_checkout_token(link, now=when)
                assert grant.client_id == cid and set(grant.invoice_ids) == {i for i, _ in listed}

        for i in MANUAL:
            cid, due = f"c{i:02d}", due_of(i)
            expected = {business(due + timedelta(days=d)) for d in (-3, 0, 3, 7, 14)}
            if i in SECOND_INVOICE:
                expected |= {business(due + timedelta(days=7 + d)) for d in (-3, 0, 3, 7, 14)}
                # The second invoice's due day is the first's +7 day: one email lists both.
                both = [m for when, m in sent[cid] if when.date() == business(due + timedelta(days=7))]
                assert len(re.findall(r"Invoice N", both[0].body("plain"))) == 2
            assert sorted(when.date() for when, _ in sent[cid]) == sorted(expected), cid
            assert all(when.hour == 10 for when, _ in sent[cid]), "each step goes out at the first tick after 09:00"

        for i in AUTOPAY:
            cid = f"c{i:02d}"
            assert [m.parsed["Subject"].split(" for ")[0] for _, m in sent[cid]] == ["Upcoming automatic payment"]

        for i in DISPUTE:
            cid, due = f"c{i:02d}", due_of(i)
            flagged, closed = local(due + timedelta(days=1), 12), local(due + timedelta(days=10), 12)
            assert not [w for w, _ in sent[cid] if flagged <= w < closed], f"{cid} emailed during its dispute"
            assert [w for w, _ in sent[cid] if w >= closed], f"{cid} not resumed after its dispute"

        for i in PROMISE:
            cid, due = f"c{i:02d}", due_of(i)
            recorded, promised_on = local(due + timedelta(days=1), 12), due + timedelta(days=9)
            assert not [w for w, _ in sent[cid] if recorded <= w and w.date() <= promised_on], cid
            assert [w for w, _ in sent[cid] if w.date() > promised_on], f"{cid} not resumed after the promise"

        for i in PAYER:
            cid = f"c{i:02d}"
            assert sent[cid] and not [w for w, _ in sent[cid] if w >= paid_at[cid]], f"{cid} emailed after paying"

        tasks = (await h.client.get("/v1/collections/tasks", headers=token(h.tenant, "ar:read"))).json()
        escalated = {t["client_id"] for t in tasks}
        assert {f"c{i:02d}" for i in MANUAL} <= escalated
        assert not escalated & {f"c{i:02d}" for i in [*AUTOPAY, *PAYER]}
        task = next(t for t in tasks if t["client_id"] == "c05")
        assert task["context"]["open_invoices"][0]["balance_minor"] == amounts["inv-c05-a"]

        async with h.factory() as session:
            announced = (await session.execute(text(
                "SELECT count(*) FROM outbox WHERE topic = 'reminder.sent'"))).scalar()
        assert announced == len(sink.messages)
