"""Each recipient of an email is sent to (and unsubscribes) separately: remember who has it.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE messages ADD COLUMN delivered_to JSONB NOT NULL DEFAULT '[]', "
               "ADD COLUMN bounced JSONB NOT NULL DEFAULT '{}'")


def downgrade() -> None:
    op.execute("ALTER TABLE messages DROP COLUMN bounced, DROP COLUMN delivered_to")
