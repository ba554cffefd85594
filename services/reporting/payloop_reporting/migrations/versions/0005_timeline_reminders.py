"""An index of the timeline's reminders and promises per client: refreshing an invoice's derived
columns looks up its last reminder and promise, and a client's timeline grows by an entry with every
invoice, so without it each refresh read the client's whole timeline.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX timeline_reminders_and_promises ON timeline (tenant_id, client_id, occurred_at DESC) "
               "WHERE kind IN ('reminder', 'promise')")


def downgrade() -> None:
    op.execute("DROP INDEX timeline_reminders_and_promises")
