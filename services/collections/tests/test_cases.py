"""A client's case through the API and events: drift, retry notices, failed sends, opt-outs,
pause/resume, send now, policy overrides."""
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text

from payloop.events import new_event

NY = ZoneInfo("America/New_York")
DUE = date(2026, 3, 5)  # Thursday


def at(days: int, hour: int = 10) -> datetime:
    day = DUE + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, tzinfo=NY)


async def timeline_kinds(h, token, cid: str) -> list[str]:
    response = await h.client.get(f"/v1/collections/clients/{cid}/timeline", headers=token(h.tenant, "ar:read"))
    return [e["kind"] for e in response.json()["items"]]


async def test_drifting_client_is_detected_published_and_gets_the_firmer_sequence(make_harness, sink, token):
    async with make_harness(at(-60)) as h:
        await h.tenant_profile()
        for cid in ("drifter", "steady"):
            await h.add_client(cid)
        # Nine months of history: 18 days to pay, then the last three invoices took 34 days.
        for k in range(9):
            issued = date(2025, 6, 1) + timedelta(days=30 * k)
            for cid, days in (("drifter", 18 if k < 6 else 34), ("steady", 18)):
                inv = await h.add_invoice(cid, issued + timedelta(days=30), 100_000, issued_on=issued)
                paid = issued + timedelta(days=days)
                await h.settle(cid, inv, 100_000, at=datetime(paid.year, paid.month, paid.day, 12, tzinfo=NY))

        behaviour = (await h.client.get("/v1/collections/clients/drifter", headers=token(h.tenant, "ar:read"))
                     ).json()["behaviour"]
        assert behaviour["drifting"] and behaviour["baseline_days_to_pay"] == 18.0
        assert behaviour["recent_days_to_pay"] == 34.0
        assert "drift_detected" in await timeline_kinds(h, token, "drifter")
        async with h.factory() as session:
            published = (await session.execute(text(
                "SELECT convert_from(payload, 'UTF8')::jsonb -> 'data' FROM outbox "
                "WHERE topic = 'client.behaviour_changed' AND key = :k ORDER BY seq DESC LIMIT 1"),
                {"k": f"{h.tenant}:drifter"})).scalar()
        assert published["drifting"] is True and published["recent_days_to_pay"] == 34.0

        # A new invoice: the drifter's third step comes at +1 as a final notice, the steady client's at +3.
        for cid in ("drifter", "steady"):
            await h.add_invoice(cid, DUE, 42_000, invoice_id=f"new-{cid}")
        for days in (-3, 0, 1):
            h.clock.set(at(days))
            await h.tick()
        by_client = {}
        for message in sink.messages:
            by_client.setdefault(message.parsed["X-Payloop-Client"], []).append(message.parsed["Subject"])
        assert by_client["drifter"][-1].startswith("Final notice") and len(by_client["drifter"]) == 3
        assert len(by_client["steady"]) == 2
        preview = (await h.client.get("/v1/collections/clients/steady/preview",
                                      headers=token(h.tenant, "ar:read"))).json()
        assert (preview[0]["offset_days"], preview[0]["level"]) == (3, "firm")


async def test_failed_autopay_with_retry_gets_a_notice_then_dunning_after_the_final_failure(make_harness, sink):
    async with make_harness(at(-1)) as h:
        await h.tenant_profile()
        await h.add_client("c1")
        await h.apply("autopay.changed", {"enrolled": True, "payment_method_id": "pm_1"}, "c1")
        inv = await h.add_invoice("c1", DUE, 30_000)
        failure = {"payment_id": "pay-1", "method": {"type": "card", "brand": "visa", "last4": "0002"},
                   "amount_minor": 30_000, "currency": "USD", "allocations": [{"invoice_id": inv, "amount_minor": 30_000}],
                   "processor": {}, "decline_code": "insufficient_funds"}
        h.clock.set(at(0, 8))
        await h.apply("payment.failed", {**failure, "attempt": 1, "retryable": True,
                                         "next_attempt_at": at(3, 15).isoformat()}, "c1")
        for days in (0, 1, 2, 3):
            h.clock.set(at(days))
            await h.tick()
        subjects = [m.parsed["Subject"] for m in sink.messages]
        assert subjects == [f"We could not process your payment for invoice N{inv}"]
        assert "We will try again on 2026-03-08 19:00 UTC" in sink.messages[0].body("plain")

        h.clock.set(at(3, 16))
        await h.apply("payment.failed", {**failure, "attempt": 2, "retryable": False, "next_attempt_at": None}, "c1")
        h.clock.set(at(4))
        await h.tick()
        assert sink.messages[-1].parsed["Subject"].startswith("Overdue")  # +3, firm: dunning took over


async def test_failed_sends_are_retried_and_bounces_recorded(make_harness, sink, token):
    async with make_harness(at(0)) as h:
        await h.tenant_profile()
        await h.add_client("down", ["ap@down.example"])
        await h.add_client("half", ["ok@half.example", "gone@half.example"])
        for cid in ("down", "half"):
            await h.add_invoice(cid, DUE, 10_000)
        sink.defer, sink.reject = {"ap@down.example"}, {"gone@half.example"}
        await h.tick()
        assert [m.rcpt_tos for m in sink.messages] == [["ok@half.example"]]
        # Step -3 was due before the clock started: superseded by the day-0 step, which is sent.
        assert await timeline_kinds(h, token, "half") == ["skipped", "bounced", "sent"]
        assert await timeline_kinds(h, token, "down") == ["skipped", "send_failed"]
        messages = (await h.client.get("/v1/collections/messages?client_id=down",
                                       headers=token(h.tenant, "ar:read"))).json()
        assert messages[0]["status"] == "pending" and messages[0]["attempts"] == 1

        sink.defer = set()
        await h.tick()  # not yet: the retry waits its backoff
        assert len(sink.messages) == 1
        h.clock.advance(timedelta(minutes=6))
        await h.tick()
        assert [m.rcpt_tos for m in sink.messages] == [["ok@half.example"], ["ap@down.example"]]  # no resend
        assert await timeline_kinds(h, token, "down") == ["skipped", "send_failed", "sent"]


async def test_one_click_unsubscribe_from_the_email(make_harness, sink, token):
    async with make_harness(at(-3)) as h:
        await h.tenant_profile()
        await h.add_client("c1", ["a@c1.example", "b@c1.example"])
        await h.add_invoice("c1", DUE, 10_000)
        await h.tick()
        first = next(m for m in sink.messages if m.rcpt_tos == ["a@c1.example"])
        link = first.parsed["List-Unsubscribe"].strip("<>")
        assert first.parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert link in first.body("plain") and link in first.body("html")
        path = link.removeprefix(h.settings.public_base_url)
        assert (await h.client.get(path)).status_code == 200  # a scanner following the link changes nothing
        assert (await h.client.post(path[:-3] + "abc")).status_code == 400
        assert (await h.client.post(path, data={"List-Unsubscribe": "One-Click"})).status_code == 200

        h.clock.set(at(0))
        await h.tick()
        assert [m.rcpt_tos for m in sink.messages[2:]] == [["b@c1.example"]]


async def test_opted_out_contacts_get_nothing(make_harness, sink, token):
    async with make_harness(at(0)) as h:
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        await h.add_invoice("c1", DUE, 10_000)
        response = await h.client.put("/v1/collections/opt-outs/AP@c1.example",
                                      headers=token(h.tenant, "collections:write"))
        assert response.status_code == 204
        await h.tick()
        assert sink.messages == []
        timeline = (await h.client.get("/v1/collections/clients/c1/timeline",
                                       headers=token(h.tenant, "ar:read"))).json()["items"]
        assert [(e["kind"], e["detail"]["reason"]) for e in timeline] == [
            ("skipped", "step1 is due"), ("skipped", "no_recipient")]


async def test_pause_resume_and_send_now(make_harness, sink, token):
    async with make_harness(at(-10)) as h:
        write = token(h.tenant, "collections:write", "ar:read")
        await h.tenant_profile()
        await h.add_client("c1")
        await h.add_invoice("c1", DUE, 10_000)

        sent_now = (await h.client.post("/v1/collections/clients/c1/send-now", headers=write)).json()
        assert sent_now["message_id"] and not sent_now["deferred"] and len(sink.messages) == 1
        again = (await h.client.post("/v1/collections/clients/c1/send-now", headers=write)).json()
        assert again["deferred"] and len(sink.messages) == 1  # one email per client per day

        paused = await h.client.post("/v1/collections/clients/c1/pause", json={"note": "called them"}, headers=write)
        assert paused.status_code == 200 and paused.json()["paused"]
        h.clock.set(at(0))
        await h.tick()
        assert len(sink.messages) == 1
        preview = (await h.client.get("/v1/collections/clients/c1/preview", headers=write)).json()
        assert preview[0]["action"] == "wait" and preview[0]["reason"] == "manual"

        await h.client.post("/v1/collections/clients/c1/resume", headers=write)
        await h.tick()
        assert len(sink.messages) == 2
        kinds = await timeline_kinds(h, token, "c1")
        assert kinds == ["sent", "paused", "resumed", "sent"]
        async with h.factory() as session:
            topics = (await session.execute(text("SELECT topic FROM outbox ORDER BY seq"))).scalars().all()
        assert topics.count("collection.paused") == 1 and topics.count("reminder.sent") == 2


async def test_promise_and_dispute_pause_with_events(make_harness, sink, token):
    async with make_harness(at(1)) as h:
        write = token(h.tenant, "collections:write")
        await h.tenant_profile()
        await h.add_client("c1")
        inv = await h.add_invoice("c1", DUE, 10_000)
        promised = await h.client.post("/v1/collections/clients/c1/promises", headers=write,
                                       json={"promised_on": "2026-03-12", "amount_minor": 10_000})
        assert promised.status_code == 201 and promised.json()["currency"] == "USD"
        unknown = await h.client.post("/v1/collections/clients/c1/promises", headers=write,
                                      json={"promised_on": "2026-03-12", "amount_minor": 1, "invoice_ids": ["nope"]})
        assert unknown.status_code == 404
        await h.tick()
        assert sink.messages == []
        await h.apply("ticket.flagged", {"ticket_id": "t1", "psa": {"source": "autotask", "external_id": "t1"},
                                         "invoice_ids": [inv]}, "c1")
        h.clock.set(at(14))  # the promise lapsed, but the dispute holds
        await h.tick()
        assert sink.messages == []
        await h.apply("ticket.flagged", {"ticket_id": "t1", "psa": {"source": "autotask", "external_id": "t1"},
                                         "invoice_ids": [inv], "open": False}, "c1")
        await h.tick()
        assert len(sink.messages) == 1 and sink.messages[0].parsed["Subject"].startswith("Final notice")
        async with h.factory() as session:
            events = (await session.execute(text(
                "SELECT topic, convert_from(payload, 'UTF8')::jsonb -> 'data' FROM outbox ORDER BY seq"))).all()
        assert "promise_broken" in await timeline_kinds(h, token, "c1")
        paused = [d["reason"] for t, d in events if t == "collection.paused"]
        assert paused == ["promise", "dispute"]
        assert [t for t, _ in events].count("promise.recorded") == 1


async def test_per_client_policy_override(make_harness, sink, token):
    async with make_harness(at(0)) as h:
        write = token(h.tenant, "collections:write", "ar:read")
        await h.tenant_profile()
        await h.add_client("c1")
        await h.add_invoice("c1", DUE, 10_000)
        gentle = {"name": "Gentle", "business_days": False,
                  "steps": [{"offset_days": 5, "level": "friendly"}, {"offset_days": 20, "level": "final"}]}
        assert (await h.client.put("/v1/collections/policies/gentle", json=gentle, headers=write)).status_code == 200
        assert (await h.client.put("/v1/collections/clients/c1/policy", json={"policy_id": "missing"},
                                   headers=write)).status_code == 404
        assert (await h.client.put("/v1/collections/clients/c1/policy", json={"policy_id": "gentle"},
                                   headers=write)).status_code == 200
        await h.tick()
        assert sink.messages == []  # the default's day-0 step no longer applies
        preview = (await h.client.get("/v1/collections/clients/c1/preview", headers=write)).json()
        assert (preview[0]["offset_days"], preview[0]["at"][:10]) == (5, "2026-03-10")
        policies = (await h.client.get("/v1/collections/policies", headers=write)).json()
        assert [p["id"] for p in policies] == ["default", "gentle"] and policies[0]["built_in"]


async def test_handoff_creates_a_task_a_person_closes(make_harness, sink, token):
    async with make_harness(at(33)) as h:  # +30 is a Saturday: the hand-off moves to Monday
        headers = token(h.tenant, "collections:write", "ar:read")
        await h.tenant_profile()
        await h.add_client("c1")
        await h.add_invoice("c1", DUE, 99_999)
        await h.tick()
        assert sink.messages == []  # a hand-off goes to a person, not to the client
        tasks = (await h.client.get("/v1/collections/tasks?status=open", headers=headers)).json()
        assert len(tasks) == 1 and tasks[0]["invoice_ids"] == [next(iter(h.invoices))]
        assert tasks[0]["context"]["open_invoices"][0]["balance_minor"] == 99_999
        done = await h.client.post(f"/v1/collections/tasks/{tasks[0]['id']}/done", json={"note": "called"},
                                   headers=headers)
        assert done.status_code == 200 and done.json()["status"] == "done"
        assert (await h.client.get("/v1/collections/tasks?status=open", headers=headers)).json() == []
        stranger = await h.client.post(f"/v1/collections/tasks/{tasks[0]['id']}/done", json={},
                                       headers=token("someone-else", "admin"))
        assert stranger.status_code == 404
        async with h.factory() as session:
            escalated = (await session.execute(text(
                "SELECT convert_from(payload, 'UTF8')::jsonb -> 'data' FROM outbox "
                "WHERE topic = 'collection.escalated'"))).scalars().all()
        assert [e["task_id"] for e in escalated] == [tasks[0]["id"]]


async def test_a_promise_paid_on_time_is_kept(make_harness, sink, token):
    async with make_harness(at(1)) as h:
        await h.tenant_profile()
        await h.add_client("c1")
        inv = await h.add_invoice("c1", DUE, 10_000)
        await h.client.post("/v1/collections/clients/c1/promises", headers=token(h.tenant, "collections:write"),
                            json={"promised_on": "2026-03-12", "amount_minor": 10_000, "invoice_ids": [inv]})
        await h.settle("c1", inv, 10_000)
        await h.tick()
        kinds = await timeline_kinds(h, token, "c1")
        assert kinds[-1] == "promise_kept" and "promise_broken" not in kinds


async def test_dated_pause_ends_by_itself_and_a_silent_payment_stops_holding_reminders(make_harness, sink, token):
    async with make_harness(at(-1)) as h:
        write = token(h.tenant, "collections:write", "ar:read")
        await h.tenant_profile()
        for cid in ("paused", "ach"):
            await h.add_client(cid)
        await h.add_invoice("paused", DUE, 10_000)
        ach = await h.add_invoice("ach", DUE, 20_000)
        await h.client.post("/v1/collections/clients/paused/pause", json={"until": "2026-03-06"}, headers=write)
        await h.apply("payment.initiated", {
            "payment_id": "pay-ach", "method": {"type": "ach", "brand": "Bank", "last4": "6789"},
            "amount_minor": 20_000, "currency": "USD", "allocations": [{"invoice_id": ach, "amount_minor": 20_000}],
            "processor": {}, "origin": "checkout"}, "ach")
        for days in (0, 1, 3, 4):
            h.clock.set(at(days))
            await h.tick()
        # The pause ended after 6 March; the ACH debit is still within its settlement time.
        assert [m.parsed["X-Payloop-Client"] for m in sink.messages] == ["paused"]
        timeline = (await h.client.get("/v1/collections/clients/paused/timeline", headers=write)).json()["items"]
        assert [(e["kind"], e["detail"].get("reason")) for e in timeline][1:3] == [
            ("resumed", "pause_ended"), ("skipped", "step2 is due")]
        assert not (await h.client.get("/v1/collections/clients/paused", headers=write)).json()["paused"]

        h.clock.set(at(12))  # ten days without a word about the debit: chase the invoice again
        before = len(sink.messages)
        await h.tick()
        assert "ach" in [m.parsed["X-Payloop-Client"] for m in sink.messages[before:]]


async def test_a_synced_history_in_one_batch_is_dated_by_the_psa_and_each_client_learnt_once(make_harness, token):
    """The first sync of a PSA brings years of paid invoices at once: the batch handler marks them paid on
    the PSA's paid dates (not the day of the sync), so the drifter is found, with one
    client.behaviour_changed per client for the whole batch."""
    async with make_harness(at(-60)) as h:
        await h.tenant_profile()
        events = []
        for k in range(9):
            issued = date(2025, 6, 1) + timedelta(days=30 * k)
            for cid, days in (("drifter", 18 if k < 6 else 34), ("steady", 18)):
                paid_on = issued + timedelta(days=days)
                events.append(new_event("invoice.created", tenant_id=h.tenant, client_id=cid, producer="test",
                                        occurred_at=h.clock.now(), data={
                    "invoice_id": f"{cid}-{k}", "psa": {"source": "connectwise", "external_id": f"{cid}-{k}"},
                    "number": f"N-{cid}-{k}", "agreement": None, "currency": "USD",
                    "issued_on": issued.isoformat(), "due_on": (issued + timedelta(days=30)).isoformat(),
                    "terms": "Net 30", "status": "paid", "subtotal_minor": 10_000, "tax_minor": 0,
                    "total_minor": 10_000, "balance_minor": 0, "lines": [], "paid_on": paid_on.isoformat()}))
        await h.apply_batch(events)

        behaviour = (await h.client.get("/v1/collections/clients/drifter", headers=token(h.tenant, "ar:read"))
                     ).json()["behaviour"]
        assert behaviour["drifting"] and (behaviour["baseline_days_to_pay"], behaviour["recent_days_to_pay"]) == (18.0, 34.0)
        steady = (await h.client.get("/v1/collections/clients/steady", headers=token(h.tenant, "ar:read"))
                  ).json()["behaviour"]
        assert not steady["drifting"] and steady["recent_days_to_pay"] == 18.0
        assert (await timeline_kinds(h, token, "drifter")).count("stopped") == 9
        async with h.factory() as session:
            announced = (await session.execute(text(
                "SELECT key, count(*) FROM outbox WHERE topic = 'client.behaviour_changed' GROUP BY key"))).all()
        assert sorted(announced) == [(f"{h.tenant}:drifter", 1), (f"{h.tenant}:steady", 1)]
