"""Event backbone: outbox, inbox and the tenant-profile replica.

Revision ID: 0001
Revises:
"""
from payloop.migrations import create_backbone_tables, drop_backbone_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_backbone_tables()


def downgrade() -> None:
    drop_backbone_tables()
