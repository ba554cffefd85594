"""The gl_posting service: what it serves, what it consumes, where its schema lives."""
from pathlib import Path

from payloop import tenant_replica
from payloop.service import ServiceDefinition

from payloop_gl_posting.api import consent_router, router
from payloop_gl_posting.handlers import BATCH_HANDLERS, HANDLERS
from payloop_gl_posting.models import metadata
from payloop_gl_posting.posting import posting_loop
from payloop_gl_posting.secrets_rotation import STORED_SECRETS
from payloop.secrets_rotation import rotation_command, rotation_router

SERVICE = ServiceDefinition(
    name="gl_posting",
    description="GL posting: accounting connections, account mapping, the posting journal and its exceptions",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[tenant_replica.router, router, consent_router, rotation_router(STORED_SECRETS)],
    handlers=HANDLERS,
    batch_handlers=BATCH_HANDLERS,
    background=[posting_loop],
    commands={"rotate-secrets": rotation_command(STORED_SECRETS)},
)
