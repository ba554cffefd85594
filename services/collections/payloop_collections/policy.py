"""Collection policies as plain values: ordered steps, business days, local time and quiet hours.

Pure functions, no I/O: the scheduler asks them when a step of an invoice is due and whether the
tenant's local time allows sending now.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

Level = Literal["courtesy", "friendly", "firm", "final", "handoff"]
LEVELS: tuple[Level, ...] = ("courtesy", "friendly", "firm", "final", "handoff")
Channel = Literal["email", "sms"]


@dataclass(frozen=True)
class Step:
    offset_days: int
    level: Level
    channel: Channel = "email"
    template: str = "reminder"


DEFAULT_STEPS: tuple[Step, ...] = (
    Step(-3, "friendly"), Step(0, "friendly"), Step(3, "firm"),
    Step(7, "firm"), Step(14, "final"), Step(30, "handoff"),
)
DEFAULT_POLICY_ID = "default"


@dataclass(frozen=True)
class Policy:
    id: str = DEFAULT_POLICY_ID
    name: str = "Default"
    steps: tuple[Step, ...] = DEFAULT_STEPS
    business_days: bool = True
    send_hour: int = 9
    # Quiet hours in the tenant's local time; a window that wraps midnight (20 -> 8) is allowed.
    quiet_start_hour: int = 20
    quiet_end_hour: int = 8
    # The firmer variant for clients whose days-to-pay is drifting: later steps come this many
    # days earlier and one level firmer.
    drift_shift_days: int = 2
    drift_firmer: bool = True
    # Clients on auto-pay get a courtesy notice instead of the first step.
    autopay_courtesy: bool = True


def firmer(level: Level) -> Level:
    if level in ("courtesy", "handoff", "final"):
        return level
    return LEVELS[LEVELS.index(level) + 1]


def steps_for(policy: Policy, *, drifting: bool) -> tuple[Step, ...]:
    """The policy's steps, or their earlier/firmer variant for a drifting client.

    Steps are identified by their position, so switching variant mid-sequence never repeats a step.
    """
    steps = tuple(sorted(policy.steps, key=lambda s: s.offset_days))
    if not drifting:
        return steps
    shifted: list[Step] = []
    floor = None
    for step in steps:
        offset = step.offset_days
        if offset > 0:
            offset = max(1, offset - policy.drift_shift_days)
        if floor is not None and offset <= floor:
            offset = floor + 1  # keep the order strict, so no two steps fall on one day
        floor = offset
        level = firmer(step.level) if policy.drift_firmer and step.offset_days > 0 else step.level
        shifted.append(replace(step, offset_days=offset, level=level))
    return tuple(shifted)


def is_business_day(day: date, holidays: frozenset[date] = frozenset()) -> bool:
    return day.weekday() < 5 and day not in holidays


def roll_to_business_day(day: date, holidays: frozenset[date] = frozenset()) -> date:
    while not is_business_day(day, holidays):
        day += timedelta(days=1)
    return day


def step_date(due_on: date, step: Step, policy: Policy, holidays: frozenset[date] = frozenset()) -> date:
    day = due_on + timedelta(days=step.offset_days)
    return roll_to_business_day(day, holidays) if policy.business_days else day


def step_send_at(due_on: date, step: Step, policy: Policy, zone: ZoneInfo,
                 holidays: frozenset[date] = frozenset()) -> datetime:
    """The instant (aware, in `zone`) at which the step becomes due."""
    return datetime.combine(step_date(due_on, step, policy, holidays), time(policy.send_hour), zone)


def in_quiet_hours(local: datetime, policy: Policy) -> bool:
    start, end, hour = policy.quiet_start_hour, policy.quiet_end_hour, local.hour
    if start == end:
        return False
    if start < end:
        return start <= hour < end
    return hour >= start or hour < end


def may_send_at(local: datetime, policy: Policy, holidays: frozenset[date] = frozenset()) -> bool:
    """Whether a reminder may go out at this local time: a business day, after the send hour, not quiet."""
    if policy.business_days and not is_business_day(local.date(), holidays):
        return False
    return local.hour >= policy.send_hour and not in_quiet_hours(local, policy)
