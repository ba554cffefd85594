"""The PSA's own paid date of an invoice (invoice events' `paid_on`), so a payment made outside Payloop
is dated by it rather than by the snapshot that showed the balance drop.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE invoices ADD COLUMN psa_paid_on DATE")


def downgrade() -> None:
    op.execute("ALTER TABLE invoices DROP COLUMN psa_paid_on")
