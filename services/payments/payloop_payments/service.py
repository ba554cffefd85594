"""The payments service: what it serves, what it consumes, where its schema lives."""
from pathlib import Path

from payloop import tenant_replica
from payloop.service import ServiceDefinition

from payloop_payments import api, checkout_pages, webhooks
from payloop_payments.handlers import BATCH_HANDLERS, HANDLERS
from payloop_payments.models import metadata
from payloop_payments.scheduler import scheduler_loop

SERVICE = ServiceDefinition(
    name="payments",
    description="Payments: processor customers, payment methods, auto-pay, attempts, installment plans, checkout, payouts",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[tenant_replica.router, api.clock_routes, api.router, checkout_pages.router, webhooks.router],
    handlers=HANDLERS,
    batch_handlers=BATCH_HANDLERS,
    background=[scheduler_loop],
    on_stop=[api.close_gateway],
)
