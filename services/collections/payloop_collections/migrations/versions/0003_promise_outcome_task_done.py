"""Promises are kept or broken; escalation tasks are closed by a person.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE promises ADD COLUMN status VARCHAR(20) NOT NULL DEFAULT 'pending'")
    op.execute("CREATE INDEX promises_pending ON promises (tenant_id, promised_on) WHERE status = 'pending'")
    op.execute("ALTER TABLE escalation_tasks ADD COLUMN done_at TIMESTAMPTZ, ADD COLUMN done_by TEXT, "
               "ADD COLUMN note TEXT")


def downgrade() -> None:
    op.execute("ALTER TABLE escalation_tasks DROP COLUMN note, DROP COLUMN done_by, DROP COLUMN done_at")
    op.execute("DROP INDEX promises_pending")
    op.execute("ALTER TABLE promises DROP COLUMN status")
