"""Event backbone: outbox, inbox and the tenant-profile replica (the same in every service)."""
from payloop.migrations import create_backbone_tables as upgrade, drop_backbone_tables as downgrade  # noqa: F401

revision = "0001"
down_revision = None
