"""The payments service: what it serves, what it consumes, where its schema lives."""
from pathlib import Path

from payloop import tenant_replica
from payloop.service import ServiceDefinition

from payloop_payments.models import metadata

SERVICE = ServiceDefinition(
    name="payments",
    description="Payments: processor customers, payment methods, auto-pay, attempts, installment plans, checkout, payouts",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[tenant_replica.router],
    handlers={"tenant.updated": tenant_replica.apply_tenant_updated},
)
