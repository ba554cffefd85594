"""The collections service: what it serves, what it consumes, where its schema lives."""
from pathlib import Path

from payloop import tenant_replica
from payloop.service import ServiceDefinition

from payloop_collections.models import metadata

SERVICE = ServiceDefinition(
    name="collections",
    description="Collections: policies, reminder sequences, cases, promises and outgoing email",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[tenant_replica.router],
    handlers={"tenant.updated": tenant_replica.apply_tenant_updated},
)
