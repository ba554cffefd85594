"""A minimal pair of services built on the shared runtime, for the backbone drills.

`drill_source` only relays its outbox; `drill_sink` consumes `drill.step.<run>` and records every
effect it applies, with no unique constraint, so a double application would show as two rows.
Run: `python drill_service.py source|sink serve --port N` with DRILL_RUN set.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import Field
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.events.catalogue import CATALOGUE, CatalogueEntry, EventData
from payloop.events.envelope import Envelope
from payloop.service import ServiceDefinition

MIGRATIONS = Path(__file__).parent / "drill_migrations"


class DrillStep(EventData):
    key: str
    seq: int = Field(strict=True)
    poison: bool = False


def drill_topic(run: str) -> str:
    return f"drill.step.{run}"


def register(run: str) -> str:
    topic = drill_topic(run)
    CATALOGUE.add(CatalogueEntry(topic, 1, DrillStep, "drill_source", "Backbone drill step (tests only)"))
    return topic


def unregister(run: str) -> None:
    """Keep the process-wide catalogue as the product defines it once a drill is over."""
    CATALOGUE.entries.pop((drill_topic(run), 1), None)


async def apply_step(session: AsyncSession, event: Envelope, data: DrillStep) -> None:
    # A little work per event widens the window between a batch's database commit and its offset
    # commit, so that SIGKILLs land there and force redeliveries the inbox must absorb.
    await session.execute(text("SELECT pg_sleep(0.002)"))
    if data.poison:
        fixed = await session.scalar(text("SELECT 1 FROM drill_fixes WHERE event_id = :e"), {"e": event.id})
        if not fixed:
            raise ValueError(f"poison step {event.id}: no fix recorded")
    else:
        last = await session.scalar(
            text("SELECT last_seq FROM drill_keys WHERE key = :k FOR UPDATE"), {"k": data.key})
        expected = (last or 0) + 1
        if data.seq != expected:
            await session.execute(text(
                "INSERT INTO drill_order_violations (key, expected, got) VALUES (:k, :e, :g)"),
                {"k": data.key, "e": expected, "g": data.seq})
        await session.execute(text(
            "INSERT INTO drill_keys (key, last_seq) VALUES (:k, :s) "
            "ON CONFLICT (key) DO UPDATE SET last_seq = EXCLUDED.last_seq"), {"k": data.key, "s": data.seq})
    await session.execute(text(
        "INSERT INTO drill_effects (event_id, key, seq, pid) VALUES (:e, :k, :s, :p)"),
        {"e": event.id, "k": data.key, "s": data.seq, "p": os.getpid()})


def definition(role: str, run: str) -> ServiceDefinition:
    topic = register(run)
    return ServiceDefinition(
        name=f"drill_{role}",
        description=f"backbone drill {role}",
        metadata=MetaData(),
        migrations_dir=MIGRATIONS,
        handlers={topic: apply_step} if role == "sink" else {},
        # A group per run: a group whose subscription changes under it stalls on Tansu.
        consumer_group=f"drill_{role}_{run}",
    )


if __name__ == "__main__":
    from payloop.runtime import main

    role = sys.argv.pop(1)
    main(definition(role, os.environ["DRILL_RUN"]))
