"""Issue 9 (2b): a manual payer is reminded three days before the due date and three days after it, pays
through the emailed checkout link in headless Chromium, and the reminders stop; the PSA shows it paid.

Collections' clock is moved forward through its API (it is the service's whole notion of now); the
other services keep wall time, which this flow does not depend on.
"""
import os
import re
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from e2e_harness import today, wait_for

from payloop.testing.browser import CHROMIUM, launch_chromium

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (Debian's chromium)")
ANY_HOUR = {"name": "E2E", "is_default": True, "business_days": False, "send_hour": 0,
            "quiet_start_hour": 0, "quiet_end_hour": 0}  # the default steps: -3, 0, +3, +7, +14, +30


async def test_reminders_before_and_after_due_then_checkout_stops_them(msp):
    cw, platform = msp.cw, msp.platform
    company_id = msp.clean_client()
    invoice = msp.bill(company_id, [("DEV-WS", "10", "45.00", "Managed Workstation")], due=today() + timedelta(days=3))
    # Its own billing address: the SMTP sink is shared by every test of the session.
    address = cw.state.companies[company_id]["invoiceToEmailAddress"] = f"ap@{msp.tenant}.example"

    async with msp.api("collections") as collections, httpx.AsyncClient(base_url=platform.world.smtp_web) as sink:
        async def policy_stored():
            answer = await collections.put("/v1/collections/policies/e2e", json=ANY_HOUR)
            return answer if answer.status_code != 404 else None  # 404 until the tenant profile arrived
        assert (await wait_for(policy_stored, "collections to learn of the tenant")).status_code == 200
        await msp.sync()
        client_id = (await msp.psa_record("client", str(company_id)))["id"]
        invoice_id = (await msp.psa_record("invoice", str(invoice["id"])))["id"]

        async def emails():
            return (await sink.get("/messages", params={"to": address})).json()["messages"]

        async def sent(levels: list[str]):
            messages = (await collections.get("/v1/collections/messages")).json()
            mine = sorted((m for m in messages if m["client_id"] == client_id and m["status"] == "sent"),
                          key=lambda m: m["local_date"])
            return mine if [m["level"] for m in mine] == levels else None

        # Three days before the due date: a friendly reminder with a checkout link.
        await wait_for(lambda: sent(["friendly"]), "the reminder three days before due")
        [first] = await wait_for(emails, "the reminder in the SMTP sink")
        assert invoice["invoiceNumber"] in first["text"]

        # Six days on (three past due): the due-date step is superseded, the firm one goes out.
        try:
            moved = await collections.put("/v1/collections/clock", json={"advance_seconds": 6 * 86_400})
            assert moved.status_code == 200, moved.text
            messages = await wait_for(lambda: sent(["friendly", "firm"]), "the reminder three days after due")
            assert [m["invoice_ids"] for m in messages] == [[invoice_id], [invoice_id]]
            mails = await wait_for(lambda: _at_least(emails, 2), "the second email in the sink")
            link = re.search(r"https?://\S+/checkout/[\w.\-]+", mails[-1]["text"]).group(0)
            assert link.startswith(platform.url("payments"))

            await pay_in_browser(link)

            # Paid: the PSA shows it, and collections has nothing left to send for it.
            async def paid_in_psa():
                return cw.state.invoices[invoice["id"]]["status"]["name"] == "Paid"
            await wait_for(paid_in_psa, "ConnectWise to show the invoice paid")

            async def stopped():
                timeline = (await collections.get(f"/v1/collections/clients/{client_id}/timeline")).json()["items"]
                return [e for e in timeline if e["kind"] == "stopped" and e["invoice_id"] == invoice_id]
            await wait_for(stopped, "collections to stop the sequence")
            preview = (await collections.get(f"/v1/collections/clients/{client_id}/preview")).json()
            assert all(item["invoice_id"] != invoice_id or item["action"] == "done" for item in preview)
        finally:
            await collections.put("/v1/collections/clock", json={"now": datetime.now(UTC).isoformat(), "speed": 1})
    async with msp.api("payments") as payments:
        page = (await payments.get("/v1/payments", params={"client_id": client_id})).json()["items"]
    assert [(p["origin"], p["status"], p["amount_minor"]) for p in page] == [("checkout", "succeeded", 45_000)]


async def _at_least(fetch, count: int):
    found = await fetch()
    return found if len(found) >= count else None


async def pay_in_browser(link: str) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await launch_chromium(p)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            await page.goto(link)
            assert await page.text_content("#total") == "USD 450.00"
            card = page.locator("#card-element input")
            for index, value in enumerate(("4242424242424242", "12", "34", "123", "10001")):
                await card.nth(index).fill(value)
            await page.click("#pay-button")
            try:
                await page.wait_for_url("**/receipts/*", timeout=20_000)
            except Exception:
                raise AssertionError(f"no receipt; page errors: {errors}; page: {(await page.content())[:1500]}")
            assert await page.text_content("#receipt-title") == "Payment received"
        finally:
            await browser.close()
