"""A retry the client starts carries its Idempotency-Key on the attempt, so a double click retries once.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("payment_attempts", sa.Column("idempotency_key", sa.String(200)))
    op.create_unique_constraint("payment_attempts_payment_id_idempotency_key_key", "payment_attempts",
                                ["payment_id", "idempotency_key"])


def downgrade() -> None:
    op.drop_constraint("payment_attempts_payment_id_idempotency_key_key", "payment_attempts")
    op.drop_column("payment_attempts", "idempotency_key")
