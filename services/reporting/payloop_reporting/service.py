"""The reporting service: what it serves, what it consumes, where its schema lives."""
from pathlib import Path

from payloop import tenant_replica
from payloop.service import ServiceDefinition

from payloop_reporting.api import router
from payloop_reporting.dashboard import router as dashboard_router
from payloop_reporting.dead_letters import watch_dead_letters
from payloop_reporting.handlers import BATCH_HANDLERS, HANDLERS
from payloop_reporting.models import metadata

def _rebuild(argv: list[str]) -> None:
    from payloop_reporting.rebuild import cli  # only the command needs the replay machinery

    cli(argv)


SERVICE = ServiceDefinition(
    name="reporting",
    description="Reporting: read models of aging, DSO and collection status, and the dashboard",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[tenant_replica.router, router, dashboard_router],
    handlers=HANDLERS,
    batch_handlers=BATCH_HANDLERS,
    background=[watch_dead_letters],
    commands={"rebuild": ("rebuild the read models by replaying every topic", _rebuild)},
)
