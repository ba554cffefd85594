"""A card convenience fee charged on top of a payment: the MSP's income, never allocated to invoices.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("payments", sa.Column("surcharge_minor", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("payments", "surcharge_minor")
