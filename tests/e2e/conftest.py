"""Fixtures of the end-to-end tests: the outside world (around the plugin's in-memory localstripe) and
one platform of six service processes for the whole folder (each test onboards an MSP of its own),
and a fresh ConnectWise per test."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_asyncio

from payloop.embedded import free_port
from payloop.simulators.connectwise import ConnectWiseSimulator

# The harness lives beside the tests (the importlib import mode puts no test folder on sys.path).
sys.path.insert(0, str(Path(__file__).parent))
from e2e_harness import Msp, PartnerReceiver, Platform, World  # noqa: E402


# Package scope (tests/e2e has an __init__.py for it): the platform's six processes stop after the last
# end-to-end test, rather than idling (and polling the broker) through the rest of the session, where
# test_dev_runtime starts a whole `payloop dev` against a 60 s limit on the same two cores.
@pytest_asyncio.fixture(scope="package")
async def world(infra, localstripe):
    world = await World.start(localstripe, infra.root)
    try:
        yield world
    finally:
        await world.stop()


@pytest_asyncio.fixture(scope="package")
async def platform(infra, world):
    platform = Platform(infra, world)
    try:
        await platform.start()
        yield platform
    finally:
        platform.stop()


@pytest_asyncio.fixture
async def partner():
    receiver = await PartnerReceiver().start()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest_asyncio.fixture
async def cw():
    """A small seeded book (four companies, a month each) on a free port of this event loop."""
    sim = ConnectWiseSimulator(companies=4, months=1)
    await sim.start(free_port())
    try:
        yield sim
    finally:
        await sim.stop()


@pytest_asyncio.fixture
async def msp(platform, cw, partner, request):
    msp = Msp(platform, cw, partner)
    await msp.onboard()
    yield msp
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:  # the services' own account of what went wrong
        for name in platform.procs:
            print(f"--- {name} ---\n{platform.log_tail(name)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report
