"""Installment plans and their scheduled parts.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "installment_plans",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("invoice_id", sa.String(128), nullable=False),
        sa.Column("payment_method_id", UUID(as_uuid=True), sa.ForeignKey("payment_methods.id"), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
        sa.CheckConstraint("total_minor > 0", name="installment_plans_total_positive"),
    )
    # One active plan per invoice: two plans would charge the same balance twice.
    op.create_index("installment_plans_one_active_per_invoice", "installment_plans", ["tenant_id", "invoice_id"],
                    unique=True, postgresql_where=sa.text("status = 'active'"))
    op.create_table(
        "installment_parts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("plan_id", UUID(as_uuid=True), sa.ForeignKey("installment_plans.id"), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("due_on", sa.Date, nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("plan_id", "seq"),
        sa.CheckConstraint("amount_minor > 0", name="installment_parts_amount_positive"),
    )
    op.create_index("installment_parts_by_due", "installment_parts", ["due_on"])


def downgrade() -> None:
    op.drop_table("installment_parts")
    op.drop_table("installment_plans")
