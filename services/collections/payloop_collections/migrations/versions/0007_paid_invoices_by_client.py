"""Each client's paid invoices, for the payment behaviour recomputed on every batch of payments.

Without it, summing one client's paid invoices read every invoice of its tenant (5 ms a call at
10,000 invoices, the largest share of collections' database time in the auto-pay benchmark).

Revision ID: 0007
Revises: 0006
"""
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX invoices_paid_by_client ON invoices (tenant_id, client_id) "
               "INCLUDE (issued_on, due_on, paid_on) WHERE paid_on IS NOT NULL")


def downgrade() -> None:
    op.execute("DROP INDEX invoices_paid_by_client")
