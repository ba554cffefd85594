"""The dashboard in headless Chromium shows the same totals as the API; a screenshot is kept in
`.payloop/test-artifacts/` (or $PAYLOOP_TEST_ARTIFACTS)."""
import asyncio
import os
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import uvicorn

from payloop.auth import mint_token
from payloop.testing.browser import CHROMIUM, launch_chromium
from payloop.embedded import free_port
from payloop.testing.plugin import REPO_ROOT, running_service
from payloop_reporting.service import SERVICE

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} is absent (Debian's chromium package); playwright cannot download one")
ARTIFACTS = Path(os.environ.get("PAYLOOP_TEST_ARTIFACTS", REPO_ROOT / ".payloop" / "test-artifacts"))


def money(minor: int) -> str:
    return f"USD {minor // 100:,}.{minor % 100:02d}"


async def test_dashboard_shows_the_api_totals(infra, book, tenant, as_of, apply_events, shift_book, blank_book):
    from playwright.async_api import async_playwright

    today = datetime.now(ZoneInfo("America/New_York")).date()
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        await apply_events(client.app.state.session_factory, shift_book(book, (today - as_of).days).events)
        token = mint_token(tenant, ["ar:read"])
        headers = {"Authorization": f"Bearer {token}"}
        metrics = (await client.get("/v1/metrics", headers=headers)).json()
        aging = (await client.get("/v1/aging", headers=headers)).json()

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port, lifespan="off",
                                               log_config=None, access_log=False))
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.05)
            async with async_playwright() as p:
                browser = await launch_chromium(p)
                page = await browser.new_page(viewport={"width": 1280, "height": 1000})
                await page.goto(f"http://127.0.0.1:{port}/#token={token}")
                await page.wait_for_function("document.getElementById('kpi-ar').textContent !== '—'")
                await page.wait_for_selector("#clients tbody tr[data-client]")

                assert await page.text_content("#kpi-ar") == money(metrics["receivables_minor"])
                assert await page.text_content("#kpi-dso") == f"{metrics['dso']:.1f} days"
                assert await page.text_content("#kpi-overdue") == f"{metrics['overdue_rate']['by_amount'] * 100:.1f}%"
                assert await page.text_content("#kpi-ontime") == f"{metrics['on_time_ratio'] * 100:.1f}%"
                assert await page.text_content("#brand-name") == "Book MSP · Receivables"
                assert "token=" not in page.url  # taken out of the address bar
                rows = page.locator("#clients tbody tr[data-client]")
                assert [await r.get_attribute("data-client") for r in await rows.all()] == \
                    [c["client_id"] for c in aging["clients"]]
                totals = [await r.locator("td.total").text_content() for r in await rows.all()]
                assert totals == [money(c["buckets"]["total"]) for c in aging["clients"]]
                exceptions = await page.locator("#exceptions li[data-kind]").count()
                assert exceptions == 5

                # A client's detail opens from its name, by keyboard, and Escape closes it.
                await page.focus("tr[data-client=A] .client-link")
                await page.keyboard.press("Enter")
                await page.wait_for_selector("#client-dialog[open] #client-timeline li[data-kind=promise]")
                assert await page.text_content("#client-title") == "Acme Dental"
                assert money(30_000) in await page.text_content("#client-summary")
                await page.keyboard.press("Escape")
                await page.wait_for_function("!document.getElementById('client-dialog').open")

                # Keyboard: tab to the "Client" sort button and press Enter: rows sort by name.
                await page.focus("th[data-sort=name] button")
                await page.keyboard.press("Enter")
                await page.wait_for_function(
                    "document.querySelector('th[data-sort=name]').getAttribute('aria-sort') === 'ascending'")
                await page.wait_for_function(
                    "document.querySelector('#clients tbody tr').dataset.client === 'A'")
                # Filter by bucket with the keyboard-operable select.
                await page.select_option("select[name=bucket]", "d90_plus")
                await page.wait_for_function("document.querySelectorAll('#clients tbody tr[data-client]').length === 1")
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(ARTIFACTS / "reporting-dashboard.png"), full_page=True)

                # Phone size: the KPI tiles stack two by two and nothing needs a page-wide scroll.
                await page.set_viewport_size({"width": 390, "height": 844})
                width = await page.evaluate("document.documentElement.scrollWidth")
                assert width <= 390
                await page.screenshot(path=str(ARTIFACTS / "reporting-dashboard-phone.png"), full_page=True)

                # Live: a new invoice arrives and the total moves without a reload (refresh every 15 s).
                live = blank_book(tenant).invoice("LIVE-1", "A", 12_345, str(today - timedelta(days=2)),
                                                  str(today + timedelta(days=28)))
                await apply_events(client.app.state.session_factory, [live])
                before = page.url
                await page.wait_for_function(
                    f"document.getElementById('kpi-ar').textContent === '{money(metrics['receivables_minor'] + 12_345)}'",
                    timeout=25_000)
                assert page.url == before  # same page, no navigation
                await browser.close()
        finally:
            server.should_exit = True
            await serving


async def test_dashboard_without_a_token_asks_for_one(infra):
    from playwright.async_api import async_playwright

    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(client.app, host="127.0.0.1", port=port, lifespan="off",
                                               log_config=None, access_log=False))
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.05)
            async with async_playwright() as p:
                browser = await launch_chromium(p)
                page = await browser.new_page()
                await page.goto(f"http://127.0.0.1:{port}/")
                assert await page.is_visible("#login") and not await page.is_visible("#main")
                await page.fill("#token-input", "not-a-token")
                await page.keyboard.press("Tab")
                await page.click("#login button[type=submit]")
                await page.wait_for_function("document.getElementById('login-error').textContent.length > 0")
                await browser.close()
        finally:
            server.should_exit = True
            await serving
