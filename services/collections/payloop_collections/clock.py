"""The service's notion of "now", injected in the composition root: the shared clocks of `payloop.clock`.

Reminders are scheduled in days; tests and `payloop dev` must be able to move through days without
waiting, so nothing in collections calls `datetime.now()` directly: it asks the clock.
"""
from payloop.clock import AdjustableClock, Clock, FixedClock

__all__ = ["AdjustableClock", "Clock", "FixedClock"]
