"""Headless Chromium for browser tests: Debian's package driven by Playwright (DESIGN.md section 7;
`playwright install` cannot download browsers here, so the executable is the system one)."""
from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# Root in CI needs --no-sandbox; the machine has no GPU and no outside network to reach.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


async def launch_chromium(playwright):
    """A headless Chromium from an `async_playwright()` context."""
    return await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
