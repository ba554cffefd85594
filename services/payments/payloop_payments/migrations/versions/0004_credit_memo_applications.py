"""Credit memo applications, kept so a memo that arrives before its invoice still reduces it.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_memo_applications",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("credit_memo_id", sa.String(128), primary_key=True),
        sa.Column("invoice_id", sa.String(128), primary_key=True),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
    )
    op.create_index("credit_memo_applications_by_invoice", "credit_memo_applications", ["tenant_id", "invoice_id"])


def downgrade() -> None:
    op.drop_table("credit_memo_applications")
