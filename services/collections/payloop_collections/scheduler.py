"""The background loop: every tick, record the steps that are due, then deliver pending email."""
from __future__ import annotations

import asyncio

import structlog
from fastapi import FastAPI

from payloop_collections import mailer, sequences
from payloop_collections.wiring import Collections

log = structlog.get_logger(__name__)


async def tick(app: FastAPI, collections: Collections) -> None:
    now = collections.clock.now()
    factory = app.state.session_factory
    await sequences.housekeeping(factory, now)
    await sequences.schedule(factory, collections.settings, now)
    await mailer.deliver_due(factory, collections.mailer, now, collections.settings.send_max_attempts)


def scheduler_loop(collections: Collections):
    async def collections_scheduler(app: FastAPI, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await tick(app, collections)
            except Exception:  # a bad tick must not kill the loop; the next one retries
                log.exception("collections.scheduler.tick_failed")
            try:
                await asyncio.wait_for(stop.wait(), collections.settings.tick_seconds)
            except TimeoutError:
                pass
    return collections_scheduler
