"""The service's notion of "now", injected in the composition root.

Reminders are scheduled in days; tests and `payloop dev` must be able to move through days without
waiting, so nothing in collections calls `datetime.now()` directly: it asks the clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol


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
