"""A service's notion of "now", and the API that moves it outside production.

Schedulers work in days (reminders, auto-pay due dates, retries); tests and `payloop dev --speed N`
must move through days without waiting, so a scheduling service asks its clock instead of calling
`datetime.now()`. `clock_router` serves `GET|PUT {prefix}/clock` for any service that has one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Awaitable, Callable, Protocol

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from payloop.auth import Principal, require
from payloop.problems import PROBLEM_RESPONSES, Problem
from payloop.settings import platform_settings


class Clock(Protocol):
    def now(self) -> datetime: ...

    def set(self, when: datetime, speed: float | None = None) -> None: ...

    def advance(self, delta: timedelta) -> None: ...


def _wall() -> datetime:
    return datetime.now(UTC)


@dataclass
class AdjustableClock:
    """Wall time until told otherwise: then time from a new anchor, optionally `speed` times faster.

    Untouched, it is exactly the system clock. `speed=1440` makes a real minute a simulated day
    (what a `--speed` flag of `payloop dev` needs). The API refuses to move it in production.
    """

    speed: float = 1.0
    _anchor: datetime = field(default_factory=_wall)
    _anchor_wall: datetime = field(default_factory=_wall)

    @classmethod
    def starting(cls, start: datetime | None, speed: float) -> "AdjustableClock":
        clock = cls(speed=speed)
        if start is not None:
            clock.set(start)
        return clock

    def now(self) -> datetime:
        return self._anchor + (_wall() - self._anchor_wall) * self.speed

    def set(self, when: datetime, speed: float | None = None) -> None:
        self._anchor, self._anchor_wall = when.astimezone(UTC), _wall()
        if speed is not None:
            self.speed = speed

    def advance(self, delta: timedelta) -> None:
        self.set(self.now() + delta)


@dataclass
class FixedClock:
    """A clock that moves only when told to: what tests use to walk through a 60-day run."""

    current: datetime

    def now(self) -> datetime:
        return self.current

    def set(self, when: datetime, speed: float | None = None) -> None:
        self.current = when.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        self.current += delta


class ClockOut(BaseModel):
    now: datetime
    speed: float | None
    settable: bool


class ClockWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    now: datetime | None = Field(None, description="Jump to this instant")
    advance_seconds: int | None = Field(None, ge=0, description="Or move forward by this much")
    speed: float | None = Field(None, gt=0, le=100_000, description="Simulated seconds per real second")


def clock_out(clock: Clock) -> ClockOut:
    return ClockOut(now=clock.now(), speed=getattr(clock, "speed", None), settable=platform_settings().env != "prod")


def move(clock: Clock, body: ClockWrite) -> None:
    """Apply a ClockWrite; 409 in production, where the clock is wall time."""
    if platform_settings().env == "prod":
        raise Problem(409, "Conflict", "the clock follows wall time in production and cannot be moved")
    if body.now is not None:
        clock.set(body.now, body.speed)
    elif body.speed is not None:
        clock.set(clock.now(), body.speed)
    if body.advance_seconds:
        clock.advance(timedelta(seconds=body.advance_seconds))


Guard = Callable[[Request, Principal], Awaitable[None]]


def clock_router(prefix: str, clock_of: Callable[[Request], Clock], *, tag: str, known_tenant: Guard) -> APIRouter:
    """`GET {prefix}/clock` (ar:read) and `PUT {prefix}/clock` (admin: the clock is the whole service's),
    for callers whose tenant the service knows (`known_tenant` raises otherwise)."""
    router = APIRouter(prefix=prefix, tags=[tag], responses=PROBLEM_RESPONSES)

    @router.get("/clock", response_model=ClockOut, summary="The instant the scheduler takes as now")
    async def get_clock(request: Request, principal: Principal = require("ar:read")) -> ClockOut:
        await known_tenant(request, principal)
        return clock_out(clock_of(request))

    @router.put("/clock", response_model=ClockOut, summary="Move or speed up the clock (not in production)",
                description="The clock is the whole service's, so this needs the `admin` scope.")
    async def put_clock(body: ClockWrite, request: Request, principal: Principal = require("admin")) -> ClockOut:
        await known_tenant(request, principal)
        clock = clock_of(request)
        move(clock, body)
        return clock_out(clock)

    return router
