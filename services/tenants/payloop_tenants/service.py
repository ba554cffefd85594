"""The tenants service: tenant profiles, branding and settings (partner webhooks come with issue 8)."""
from pathlib import Path

from payloop.service import ServiceDefinition

from payloop_tenants.api import router
from payloop_tenants.models import metadata

SERVICE = ServiceDefinition(
    name="tenants",
    description="Tenants: MSP profiles, branding and settings; publishes tenant.updated",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[router],
)
