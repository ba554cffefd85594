"""The tenants service: tenant profiles, branding and settings; partner webhooks; the audit log."""
from pathlib import Path

from payloop.events.catalogue import CATALOGUE
from payloop.service import ServiceDefinition

from payloop_tenants.api import router as tenants_router
from payloop_tenants.audit.api import router as audit_router
from payloop_tenants.audit.handlers import store_audit_entry
from payloop_tenants.models import metadata
from payloop_tenants.secrets_rotation import STORED_SECRETS
from payloop_tenants.webhooks.api import router as webhooks_router
from payloop_tenants.webhooks.fanout import fan_out, fan_out_many
from payloop_tenants.webhooks.schemas import SUBSCRIBABLE_TYPES
from payloop_tenants.webhooks.sender import WebhookSender
from payloop.secrets_rotation import rotation_command, rotation_router

HANDLERS = {type: fan_out for type in CATALOGUE.types() if type in SUBSCRIBABLE_TYPES}
HANDLERS["audit.recorded"] = store_audit_entry
BATCH_HANDLERS = {type: fan_out_many for type in HANDLERS if HANDLERS[type] is fan_out}

SERVICE = ServiceDefinition(
    name="tenants",
    description="Tenants: MSP profiles, branding and settings; partner webhooks; the audit log. "
                "Publishes tenant.updated and webhook_endpoint.disabled",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[tenants_router, webhooks_router, audit_router, rotation_router(STORED_SECRETS)],
    handlers=HANDLERS,
    batch_handlers=BATCH_HANDLERS,
    background=[WebhookSender().run],
    commands={"rotate-secrets": rotation_command(STORED_SECRETS)},
)
