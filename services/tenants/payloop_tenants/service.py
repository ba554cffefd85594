"""The tenants service: tenant profiles, branding and settings; partner webhooks; the audit log."""
from pathlib import Path

from payloop.events.catalogue import CATALOGUE
from payloop.service import ServiceDefinition

from payloop_tenants.api import router as tenants_router
from payloop_tenants.audit.api import router as audit_router
from payloop_tenants.audit.handlers import store_audit_entry
from payloop_tenants.models import metadata
from payloop_tenants.secrets_rotation import router as secrets_router
from payloop_tenants.webhooks.api import router as webhooks_router
from payloop_tenants.webhooks.fanout import fan_out
from payloop_tenants.webhooks.schemas import SUBSCRIBABLE_TYPES
from payloop_tenants.webhooks.sender import WebhookSender
from payloop.secrets import rotation_command
from payloop_tenants.models import WebhookEndpoint

HANDLERS = {type: fan_out for type in CATALOGUE.types() if type in SUBSCRIBABLE_TYPES}
HANDLERS["audit.recorded"] = store_audit_entry

SERVICE = ServiceDefinition(
    name="tenants",
    description="Tenants: MSP profiles, branding and settings; partner webhooks; the audit log. "
                "Publishes tenant.updated and webhook_endpoint.disabled",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[tenants_router, webhooks_router, audit_router, secrets_router],
    handlers=HANDLERS,
    background=[WebhookSender().run],
    commands={"rotate-secrets": ("re-encrypt every tenant's webhook secrets with the newest key", rotation_command(
        "tenants", [(WebhookEndpoint.__table__, "secret_encrypted"),
                    (WebhookEndpoint.__table__, "previous_secret_encrypted")]))},
)
