"""The service's background loop: incremental syncs of due connections, and due payment write-backs.

Woken at once by a verified webhook (`app.state.psa_wake`), otherwise every second; connections are
due by `next_sync_at` (their poll interval), write-backs by `next_attempt_at`.
"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop_psa_ingest import repository
from payloop_psa_ingest.sync import Disconnected, SyncBusy, run_sync, sync_gate
from payloop_psa_ingest.writeback import process_due_writebacks

log = structlog.get_logger(__name__)

TICK_S = 1.0


async def sync_due_connections(factory: async_sessionmaker[AsyncSession], gate: asyncio.Semaphore) -> int:
    async with factory() as session:
        due = await repository.due_connections(session, datetime.now(UTC))
    for tenant_id, connection_id in due:
        try:
            await run_sync(factory, tenant_id, connection_id, trigger="poll", gate=gate)
        except (SyncBusy, Disconnected, LookupError):
            continue
    return len(due)


async def psa_background(app: FastAPI, stop: asyncio.Event) -> None:
    wake = app.state.psa_wake = asyncio.Event()
    factory = app.state.session_factory
    while not stop.is_set():
        wake.clear()
        try:
            await sync_due_connections(factory, sync_gate(app))
            await process_due_writebacks(factory)
        except Exception as exc:  # a bad connection or a database blip must not end the loop
            log.error("psa.background.error", error=repr(exc))
        sleeper = asyncio.ensure_future(wake.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({sleeper, stopper}, timeout=TICK_S, return_when=asyncio.FIRST_COMPLETED)
        sleeper.cancel()
        stopper.cancel()
