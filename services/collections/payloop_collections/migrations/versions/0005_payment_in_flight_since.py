"""When a payment went in flight, so a payment whose outcome never arrives stops holding reminders.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE invoices ADD COLUMN payment_in_flight_since TIMESTAMPTZ")


def downgrade() -> None:
    op.execute("ALTER TABLE invoices DROP COLUMN payment_in_flight_since")
