"""An index of what each payout holds: a settled payment looks for the payouts that list it (one that
arrived before the payment did waits for it), and without the index each lookup read every item of
every payout of the tenant, a cost that grew with each day's payout.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX payouts_items ON payouts USING gin (items jsonb_path_ops)")


def downgrade() -> None:
    op.execute("DROP INDEX payouts_items")
