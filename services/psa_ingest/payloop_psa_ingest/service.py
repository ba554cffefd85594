"""The psa_ingest service: what it serves, what it consumes, where its schema lives."""
from pathlib import Path

from payloop import tenant_replica
from payloop.service import ServiceDefinition

from payloop_psa_ingest import api, webhooks
from payloop_psa_ingest.secrets_rotation import STORED_SECRETS
from payloop_psa_ingest.background import psa_background
from payloop_psa_ingest.models import metadata
from payloop_psa_ingest.writeback import on_payment_disputed, on_payment_refunded, on_payment_settled
from payloop.secrets_rotation import rotation_command, rotation_router

SERVICE = ServiceDefinition(
    name="psa_ingest",
    description="PSA ingestion: connections, sync, clients, agreements and invoices as in the PSA, payment write-back",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[tenant_replica.router, api.router, webhooks.router, rotation_router(STORED_SECRETS)],
    handlers={
        "tenant.updated": tenant_replica.apply_tenant_updated,
        "payment.settled": on_payment_settled,
        "payment.refunded": on_payment_refunded,
        "payment.disputed": on_payment_disputed,
    },
    background=[psa_background],
    commands={"rotate-secrets": rotation_command(STORED_SECRETS)},
)
