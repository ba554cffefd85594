"""The collections service: the composition root wiring the clock, settings and mailer into routes,
event handlers and the scheduler loop."""
from pathlib import Path

from payloop import tenant_replica
from payloop.service import ServiceDefinition

from payloop_collections.api import build_public_router, build_router
from payloop_collections.clock import Clock
from payloop_collections.handlers import build_handlers
from payloop_collections.mailer import SmtpMailer
from payloop_collections.models import metadata
from payloop_collections.scheduler import scheduler_loop
from payloop_collections.settings import CollectionsSettings
from payloop_collections.wiring import Collections, clock_from


def build_service(*, clock: Clock | None = None, settings: CollectionsSettings | None = None,
                  scheduler: bool = True) -> ServiceDefinition:
    """The service with its collaborators; tests pass a clock they move and their own SMTP server."""
    settings = settings or CollectionsSettings()
    collections = Collections(
        clock=clock or clock_from(settings),
        settings=settings, mailer=SmtpMailer(settings))
    handlers, batch_handlers = build_handlers(collections.clock)
    return ServiceDefinition(
        name="collections",
        description="Collections: policies, reminder sequences, cases, promises and outgoing email",
        metadata=metadata,
        migrations_dir=Path(__file__).parent / "migrations",
        routers=[tenant_replica.router, build_router(collections), build_public_router(collections)],
        handlers=handlers,
        batch_handlers=batch_handlers,
        background=[scheduler_loop(collections)] if scheduler else [],
    )


SERVICE = build_service()
