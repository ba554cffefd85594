"""Policies as pure functions: business days, local time, quiet hours, the drifting variant."""
from datetime import date, datetime
from zoneinfo import ZoneInfo

from payloop_collections.policy import (
    DEFAULT_STEPS, Policy, Step, in_quiet_hours, may_send_at, roll_to_business_day, step_date, step_send_at,
    steps_for,
)

NY, TOKYO = ZoneInfo("America/New_York"), ZoneInfo("Asia/Tokyo")


def test_default_steps_are_the_documented_sequence():
    assert [(s.offset_days, s.level) for s in DEFAULT_STEPS] == [
        (-3, "friendly"), (0, "friendly"), (3, "firm"), (7, "firm"), (14, "final"), (30, "handoff")]


def test_steps_on_weekends_and_holidays_move_to_the_next_business_day():
    friday = date(2026, 3, 6)
    assert step_date(friday, Step(1, "firm"), Policy()) == date(2026, 3, 9)  # Saturday -> Monday
    assert step_date(friday, Step(1, "firm"), Policy(business_days=False)) == date(2026, 3, 7)
    holidays = frozenset({date(2026, 3, 9)})
    assert roll_to_business_day(date(2026, 3, 7), holidays) == date(2026, 3, 10)


def test_send_time_is_the_send_hour_in_the_tenants_zone():
    at = step_send_at(date(2026, 3, 4), Step(0, "friendly"), Policy(send_hour=9), NY)
    assert at.astimezone(ZoneInfo("UTC")) == datetime(2026, 3, 4, 14, 0, tzinfo=ZoneInfo("UTC"))
    # Across the DST change (8 March 2026 in New York) the local hour stays 09:00.
    after_dst = step_send_at(date(2026, 3, 10), Step(0, "friendly"), Policy(send_hour=9), NY)
    assert after_dst.astimezone(ZoneInfo("UTC")).hour == 13


def test_quiet_hours_wrap_midnight():
    policy = Policy(quiet_start_hour=20, quiet_end_hour=8)
    assert in_quiet_hours(datetime(2026, 3, 4, 22, tzinfo=NY), policy)
    assert in_quiet_hours(datetime(2026, 3, 4, 7, tzinfo=NY), policy)
    assert not in_quiet_hours(datetime(2026, 3, 4, 12, tzinfo=NY), policy)
    day_quiet = Policy(quiet_start_hour=12, quiet_end_hour=14)
    assert in_quiet_hours(datetime(2026, 3, 4, 13, tzinfo=NY), day_quiet)


def test_may_send_only_on_business_days_after_send_hour_outside_quiet_hours():
    policy = Policy(send_hour=9, quiet_start_hour=17, quiet_end_hour=8)
    assert may_send_at(datetime(2026, 3, 4, 10, tzinfo=TOKYO), policy)
    assert not may_send_at(datetime(2026, 3, 4, 8, 59, tzinfo=TOKYO), policy)
    assert not may_send_at(datetime(2026, 3, 4, 18, tzinfo=TOKYO), policy)
    assert not may_send_at(datetime(2026, 3, 7, 10, tzinfo=TOKYO), policy)  # Saturday
    assert may_send_at(datetime(2026, 3, 7, 10, tzinfo=TOKYO), Policy(business_days=False))


def test_drifting_clients_get_earlier_and_firmer_later_steps():
    steps = steps_for(Policy(drift_shift_days=2), drifting=True)
    assert [(s.offset_days, s.level) for s in steps] == [
        (-3, "friendly"), (0, "friendly"), (1, "final"), (5, "final"), (12, "final"), (28, "handoff")]
    assert steps_for(Policy(), drifting=False) == DEFAULT_STEPS
    # Shifts never merge two steps into one day.
    tight = Policy(steps=(Step(1, "friendly"), Step(2, "firm"), Step(3, "final")), drift_shift_days=5)
    assert [s.offset_days for s in steps_for(tight, drifting=True)] == [1, 2, 3]
