"""A client's reminders through the running service: due steps, local time, the email itself."""
import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

from payloop.checkout_links import verify_checkout_token

NY = ZoneInfo("America/New_York")


async def test_due_step_is_emailed_once_at_local_send_hour(make_harness, sink, token):
    due = date(2026, 3, 4)  # a Wednesday; step -3 falls on Sunday 1 March and moves to Monday 2 March
    async with make_harness(datetime(2026, 3, 2, 8, 30, tzinfo=NY)) as h:
        await h.tenant_profile(display_name="Acme IT", primary_color="#aa0000", support_email="ar@acme.example")
        await h.add_client("c1", ["ap@c1.example"], name="Contoso")
        invoice = await h.add_invoice("c1", due, 125_050)

        await h.tick()  # 08:30 local: before the send hour
        assert sink.messages == []
        h.clock.set(datetime(2026, 3, 2, 9, 5, tzinfo=NY))
        await h.tick()
        await h.tick()  # a second tick the same day sends nothing more
        assert len(sink.messages) == 1
        sent = sink.messages[0]
        assert sent.rcpt_tos == ["ap@c1.example"]
        assert "N" + invoice in sent.parsed["subject"]
        text, html = sent.body("plain"), sent.body("html")
        assert "1,250.50 USD" in text and "1,250.50 USD" in html
        assert "Managed Services Gold" in text and "Workstation management" in text
        assert "Acme IT" in html and "#aa0000" in html
        assert sent.parsed["From"] == "Acme IT <billing@payloop.local>"
        assert sent.parsed["Reply-To"] == "ar@acme.example"
        link = re.search(r"http://pay\.test/checkout/(\S+)", text).group(1)
        grant = verify_checkout_token(link, now=h.clock.now())
        assert (grant.tenant_id, grant.client_id, grant.invoice_ids) == (h.tenant, "c1", (invoice,))

        timeline = (await h.client.get("/v1/collections/clients/c1/timeline",
                                       headers=token(h.tenant, "ar:read"))).json()["items"]
        assert [e["kind"] for e in timeline] == ["sent"]
        metrics = (await h.client.get("/metrics")).text
        assert 'payloop_collections_emails_total{result="delivered"}' in metrics
        assert 'payloop_collections_steps_total{outcome="send"}' in metrics
        preview = (await h.client.get("/v1/collections/clients/c1/preview",
                                      headers=token(h.tenant, "ar:read"))).json()
        assert preview[0]["step"] == "step1" and preview[0]["action"] == "send"
        assert preview[0]["at"].startswith("2026-03-04T09:00:00")


async def test_a_returned_payment_puts_the_invoice_back_in_its_sequence(make_harness, sink, token):
    async with make_harness(datetime(2026, 3, 2, 10, tzinfo=NY)) as h:
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        invoice = await h.add_invoice("c1", date(2026, 3, 5), 40_000)
        payment = await h.settle("c1", invoice, 40_000)
        await h.tick()
        assert sink.messages == []  # paid: nothing to remind
        # The bank returns the ACH debit: payments announces the reversal as payment.disputed (returned).
        await h.apply("payment.disputed", {**payment.data, "dispute_id": "return:py_1", "disputed_minor": 40_000,
                                           "status": "returned", "reason": "returned: insufficient_funds"}, "c1")
        timeline = (await h.client.get("/v1/collections/clients/c1/timeline",
                                       headers=token(h.tenant, "ar:read"))).json()["items"]
        assert "payment_reversed" in [e["kind"] for e in timeline]
        h.clock.set(datetime(2026, 3, 10, 10, tzinfo=NY))  # a business day past the +3 step
        await h.tick()
        assert [m.rcpt_tos for m in sink.messages] == [["ap@c1.example"]]


async def test_a_won_dispute_covers_the_invoice_again_and_an_inquiry_never_uncovered_it(make_harness, sink, token):
    async with make_harness(datetime(2026, 3, 2, 10, tzinfo=NY)) as h:
        await h.tenant_profile()
        await h.add_client("c1", ["ap@c1.example"])
        invoice = await h.add_invoice("c1", date(2026, 3, 5), 40_000)
        payment = await h.settle("c1", invoice, 40_000)
        dispute = {**payment.data, "dispute_id": "dp_1", "disputed_minor": 40_000}
        await h.apply("payment.disputed", {**dispute, "dispute_id": "dp_0", "status": "warning_needs_response"}, "c1")
        await h.apply("payment.disputed", {**dispute, "status": "needs_response"}, "c1")
        await h.apply("payment.disputed", {**dispute, "status": "won"}, "c1")
        kinds = [e["kind"] for e in (await h.client.get("/v1/collections/clients/c1/timeline",
                                                        headers=token(h.tenant, "ar:read"))).json()["items"]]
        assert kinds.count("payment_reversed") == 1 and kinds.count("payment_restored") == 1
        h.clock.set(datetime(2026, 3, 10, 10, tzinfo=NY))  # past every step that would dun an open invoice
        await h.tick()
        assert sink.messages == []
