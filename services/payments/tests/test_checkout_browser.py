"""The hosted checkout in headless Chromium (Debian's chromium), paying with localstripe's Stripe.js
stand-in: branding, invoices of the link, a card payment through the same charging path as the API,
the receipt, keyboard-only use on a phone-sized screen, an installment plan with its schedule, the card fee. Screenshots of each page are kept in
`.payloop/test-artifacts/payments/` (or $PAYLOOP_TEST_ARTIFACTS)."""
import asyncio
import os
import uuid
from contextlib import asynccontextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest
import uvicorn

from payloop.checkout_links import mint_checkout_token
from payloop.testing.browser import CHROMIUM, launch_chromium
from payloop.embedded import free_port
from payloop.testing.plugin import REPO_ROOT

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent (Debian's chromium package); playwright cannot download one")
ARTIFACTS = Path(os.environ.get("PAYLOOP_TEST_ARTIFACTS", REPO_ROOT / ".payloop" / "test-artifacts")) / "payments"
BRANDING = {"sender_name": "Northwind IT", "primary_color": "#0b6e4f", "accent_color": "#ffb000",
            "support_email": "billing@northwind.example"}


@asynccontextmanager
async def browser_on(client, **page_options):
    """The service app served on a real port (sharing the test's event loop) and a Chromium page."""
    from playwright.async_api import async_playwright

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port, lifespan="off",
                                           log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with async_playwright() as p:
            browser = await launch_chromium(p)
            try:
                page = await browser.new_page(**page_options)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.base = f"http://127.0.0.1:{port}"
                page.errors = errors
                yield page
            finally:
                await browser.close()
    finally:
        server.should_exit = True
        await serving


async def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def open_minor(client, headers, client_id: str) -> dict[str, int]:
    listed = (await client.get(f"/v1/clients/{client_id}/invoices", headers=headers)).json()
    return {i["invoice_id"]: i["open_minor"] for i in listed}


async def fill_card(page, number: str = "4242424242424242") -> None:
    card = page.locator("#card-element input")
    for index, value in enumerate((number, "12", "34", "123", "10001")):
        await card.nth(index).fill(value)


async def test_pay_one_invoice_by_card_and_see_the_receipt(payments, token, kit):
    headers = token("t-co", "admin")
    await kit.seed_tenant(payments, "t-co", branding=BRANDING)
    await kit.seed_client(payments, "t-co", "acme")
    due = date.today() + timedelta(days=10)
    await kit.seed_invoice(payments, "t-co", "acme", "co-1", 12_345, due=due)
    await kit.seed_invoice(payments, "t-co", "acme", "co-2", 50_000, due=due + timedelta(days=30))
    link = mint_checkout_token("t-co", "acme", ["co-1", "co-2"])

    async with browser_on(payments, viewport={"width": 1280, "height": 900}) as page:
        await page.goto(f"{page.base}/checkout/{link}")
        assert await page.text_content("#brand-name") == "Northwind IT"
        assert await page.eval_on_selector(".masthead", "e => getComputedStyle(e).backgroundColor") == "rgb(11, 110, 79)"
        assert "billing@northwind.example" in await page.text_content("footer")
        assert [await i.get_attribute("data-invoice") for i in await page.locator("li.invoice").all()] == ["co-1", "co-2"]
        assert await page.text_content("#total") == "USD 623.45"
        await shot(page, "checkout")

        await page.uncheck("#pay-2")  # pay only the first invoice
        assert await page.text_content("#pay-total") == "USD 123.45"
        await fill_card(page)
        await page.dblclick("#pay-button")  # a double click still pays once
        await page.wait_for_url("**/receipts/*")
        assert await page.text_content("#receipt-title") == "Payment received"
        assert await page.text_content("#receipt-amount") == "USD 123.45"
        await shot(page, "receipt")

        await page.goto(f"{page.base}/checkout/{link}")  # what is left to pay
        assert [await i.get_attribute("data-invoice") for i in await page.locator("li.invoice").all()] == ["co-2"]
        assert page.errors == []

    settled = await kit.outbox_events(payments, "payment.settled", "t-co")
    assert len(settled) == 1
    assert settled[0]["data"]["allocations"] == [{"invoice_id": "co-1", "amount_minor": 12_345}]
    initiated = await kit.outbox_events(payments, "payment.initiated", "t-co")
    assert [e["data"]["origin"] for e in initiated] == ["checkout"]
    assert await open_minor(payments, headers, "acme") == {"co-1": 0, "co-2": 50_000}
    payment = (await payments.get(f"/v1/payments/{settled[0]['data']['payment_id']}", headers=headers)).json()
    assert [a["client_initiated"] for a in payment["attempts"]] == [True]  # outside the dunning budget
    # The card was not to be kept: it is detached, so auto-pay can never use it.
    assert [m["status"] for m in (await payments.get("/v1/clients/acme/payment-methods", headers=headers)).json()] \
        == ["detached"]


async def test_partial_payment_by_keyboard_on_a_phone(payments, token, kit):
    headers = token("t-kb", "admin")
    await kit.seed_tenant(payments, "t-kb", branding=BRANDING)
    await kit.seed_client(payments, "t-kb", "bolt")
    await kit.seed_invoice(payments, "t-kb", "bolt", "kb-1", 90_000, due=date.today() - timedelta(days=5))
    link = mint_checkout_token("t-kb", "bolt", [])  # a client link: every open invoice

    async with browser_on(payments, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True) as page:
        await page.goto(f"{page.base}/checkout/{link}")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        assert "Overdue since" in await page.text_content(".due")
        unlabeled = await page.evaluate("""[...document.querySelectorAll('#checkout input')]
            .filter(i => !i.closest('#card-element') && i.labels.length === 0).map(i => i.id)""")
        assert unlabeled == []
        await shot(page, "checkout-phone")

        # Keyboard only: Tab reaches the invoice, its amount, then on to the card and the button.
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "pay-1"
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "amount-1"
        await page.keyboard.press("Control+A")
        await page.keyboard.type("250.5")
        assert await page.text_content("#pay-total") == "USD 250.50"
        await page.keyboard.press("Tab")  # the invoice lines disclosure
        assert await page.evaluate("document.activeElement.tagName") == "SUMMARY"
        await page.keyboard.press("Tab")  # into the card number; the card fields move focus on as they fill
        for value in ("4242424242424242", "12", "34", "123", "10001"):
            await page.keyboard.type(value)
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "save-card"
        await page.keyboard.press("Space")  # keep this card
        await page.keyboard.press("Tab")  # auto-pay
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "plan-parts"
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "pay-button"
        box = await page.locator("#pay-button").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        await page.keyboard.press("Enter")
        await page.wait_for_url("**/receipts/*")
        assert await page.text_content("#receipt-amount") == "USD 250.50"
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await shot(page, "receipt-phone")

    assert await open_minor(payments, headers, "bolt") == {"kb-1": 90_000 - 25_050}
    assert [m["status"] for m in (await payments.get("/v1/clients/bolt/payment-methods", headers=headers)).json()] \
        == ["active"]


async def test_refused_links_get_a_friendly_page(payments, kit):
    await kit.seed_tenant(payments, "t-ref", branding=BRANDING)
    await kit.seed_client(payments, "t-ref", "cleo")
    expired = mint_checkout_token("t-ref", "cleo", [], ttl=timedelta(days=-1))
    body, signature = mint_checkout_token("t-ref", "cleo", []).split(".")
    tampered = f"{body[:-2]}xx.{signature}"

    async with browser_on(payments, viewport={"width": 390, "height": 844}) as page:
        response = await page.goto(f"{page.base}/checkout/{expired}")
        assert response.status == 410
        assert await page.text_content("#refused-title") == "This payment link has expired"
        assert await page.text_content("#brand-name") == "Northwind IT"  # the tenant is known, so is its contact
        await shot(page, "link-expired")
        response = await page.goto(f"{page.base}/checkout/{tampered}")
        assert response.status == 401
        assert await page.text_content("#refused-title") == "This payment link is not valid"
        assert "Northwind" not in await page.content()  # a forged link learns nothing
        await shot(page, "link-tampered")


async def test_a_saved_bank_account_pays_from_the_page(payments, stripe_webhooks, token, kit):
    headers = token("t-bank", "admin")
    await kit.seed_tenant(payments, "t-bank", branding=BRANDING)
    await kit.seed_client(payments, "t-bank", "acme")
    await kit.seed_invoice(payments, "t-bank", "acme", "bk-1", 64_000, due=date.today())
    account = await kit.save_bank_account(payments, headers, "acme")
    link = mint_checkout_token("t-bank", "acme", [])

    async with browser_on(payments) as page:
        await page.goto(f"{page.base}/checkout/{link}")
        saved = page.get_by_label("Bank account at Stripe Test Bank ending 6789")
        assert await saved.is_checked()
        assert await page.locator("#card-fields").is_hidden()  # no card to type for a saved account
        await page.get_by_label("A new card").check()
        assert await page.locator("#card-fields").is_visible()
        await saved.check()
        await shot(page, "checkout-bank-account")
        await page.click("#pay-button")
        await page.wait_for_url("**/receipts/*")
        assert await page.text_content("#receipt-title") == "Payment processing"
        assert page.errors == []

    initiated = await kit.outbox_events(payments, "payment.initiated", "t-bank")
    assert [(e["data"]["method"]["type"], e["data"]["amount_minor"]) for e in initiated] == [("ach", 64_000)]
    assert await open_minor(payments, headers, "acme") == {"bk-1": 0}  # held while the debit processes
    await stripe_webhooks.advance(days=4)
    settled = await kit.outbox_events(payments, "payment.settled", "t-bank")
    assert [e["data"]["payment_id"] for e in settled] == [initiated[0]["data"]["payment_id"]]
    methods = (await payments.get("/v1/clients/acme/payment-methods", headers=headers)).json()
    assert [(m["id"], m["status"]) for m in methods] == [(account["id"], "active")]  # still saved


async def test_an_installment_plan_with_its_schedule_shown_before_confirming(payments, token, kit):
    tenant = f"t-plan-{uuid.uuid4().hex[:8]}"
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant, branding=BRANDING)
    await kit.seed_client(payments, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "pl-1", 100_001, due=date.today())
    await kit.seed_invoice(payments, tenant, "acme", "pl-2", 5_000, due=date.today())
    link = mint_checkout_token(tenant, "acme", [])

    async with browser_on(payments, viewport={"width": 390, "height": 844}) as page:
        await page.goto(f"{page.base}/checkout/{link}")
        await page.select_option("#plan-parts", "3")
        assert await page.locator("#plan-schedule").is_hidden()  # two invoices chosen: no plan yet
        await page.uncheck("#pay-2")
        await page.locator("#plan-schedule").wait_for(state="visible")
        rows = [await r.inner_text() for r in await page.locator("#plan-schedule tbody tr").all()]
        assert [row.split("\t")[-1] for row in rows] == ["USD 333.34", "USD 333.34", "USD 333.33"]
        assert await page.text_content("#pay-total") == "USD 333.34 now"
        await shot(page, "checkout-installments")
        await fill_card(page)
        await page.click("#pay-button")
        await page.wait_for_url("**/receipts/*")
        assert await page.text_content("#receipt-amount") == "USD 333.34"
        assert page.errors == []

    plans = (await payments.get("/v1/clients/acme/installment-plans", headers=headers)).json()
    assert [[p["status"] for p in plan["parts"]] for plan in plans] == [["succeeded", "scheduled", "scheduled"]]
    assert await open_minor(payments, headers, "acme") == {"pl-1": 100_001 - 33_334, "pl-2": 5_000}


async def test_the_card_convenience_fee_is_shown_before_paying(payments, token, kit):
    tenant = f"t-fee-{uuid.uuid4().hex[:8]}"
    headers = token(tenant, "admin")
    await kit.seed_tenant(payments, tenant, branding=BRANDING, convenience_fee={"card_basis_points": 250})
    await kit.seed_client(payments, tenant, "acme")
    await kit.seed_invoice(payments, tenant, "acme", "fe-1", 10_020, due=date.today())
    link = mint_checkout_token(tenant, "acme", [])

    async with browser_on(payments, viewport={"width": 390, "height": 844}) as page:
        await page.goto(f"{page.base}/checkout/{link}")
        assert await page.text_content("#card-fee-amount") == "USD 2.51"  # 250.5 cents, half up
        assert await page.text_content("#total") == "USD 100.20"
        assert await page.text_content("#pay-total") == "USD 102.71"
        await shot(page, "checkout-card-fee")
        await fill_card(page)
        await page.click("#pay-button")
        await page.wait_for_url("**/receipts/*")
        assert await page.text_content("#receipt-amount") == "USD 102.71"
        assert await page.text_content("#receipt-card-fee") == "USD 2.51"
        assert page.errors == []

    assert await open_minor(payments, headers, "acme") == {"fe-1": 0}
    settled = await kit.outbox_events(payments, "payment.settled", tenant)
    assert [(e["data"]["amount_minor"], e["data"]["surcharge_minor"]) for e in settled] == [(10_020, 251)]
