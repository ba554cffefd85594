"""What the composition root hands to routes and loops: the clock, settings and the mailer."""
from __future__ import annotations

from dataclasses import dataclass

from payloop_collections.clock import AdjustableClock, Clock
from payloop_collections.mailer import SmtpMailer
from payloop_collections.settings import CollectionsSettings


@dataclass
class Collections:
    clock: Clock
    settings: CollectionsSettings
    mailer: SmtpMailer


def clock_from(settings: CollectionsSettings) -> AdjustableClock:
    clock = AdjustableClock(speed=settings.clock_speed)
    if settings.clock_start is not None:
        clock.set(settings.clock_start)
    return clock
