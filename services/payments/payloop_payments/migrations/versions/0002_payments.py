"""Payments: clients, invoices, methods, auto-pay, payments, attempts, refunds, Stripe events.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, **kw) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)


def _now(name: str) -> sa.Column:
    return _ts(name, nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("billing_emails", JSONB, nullable=False, server_default="[]"),
        sa.Column("stripe_customer_id", sa.String(64)),
        sa.Column("credit_minor", sa.BigInteger, nullable=False, server_default="0"),
        _now("updated_at"),
        sa.CheckConstraint("credit_minor >= 0", name="clients_credit_not_negative"),
    )
    op.create_table(
        "invoices",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("invoice_id", sa.String(128), primary_key=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("number", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("issued_on", sa.Date, nullable=False),
        sa.Column("due_on", sa.Date, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("psa_balance_minor", sa.BigInteger, nullable=False),
        sa.Column("credited_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("collected_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("pending_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("line_kinds", JSONB, nullable=False, server_default="[]"),
        sa.Column("lines", JSONB, nullable=False, server_default="[]"),
        sa.Column("agreement", JSONB),
        _ts("source_occurred_at", nullable=False),
        _now("updated_at"),
        sa.CheckConstraint("pending_minor >= 0", name="invoices_pending_not_negative"),
    )
    op.create_index("invoices_by_client", "invoices", ["tenant_id", "client_id", "due_on"])
    op.create_table(
        "credit_memos",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("credit_memo_id", sa.String(128), primary_key=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("total_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _now("created_at"),
    )
    op.create_table(
        "payment_methods",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("stripe_payment_method_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(8), nullable=False),
        sa.Column("brand", sa.String(64)),
        sa.Column("last4", sa.String(4)),
        sa.Column("status", sa.String(16), nullable=False, server_default="active"),
        sa.Column("status_reason", sa.String(200)),
        _now("created_at"),
        sa.UniqueConstraint("tenant_id", "stripe_payment_method_id"),
    )
    op.create_table(
        "autopay_enrollments",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(128), primary_key=True),
        sa.Column("payment_method_id", UUID(as_uuid=True), sa.ForeignKey("payment_methods.id"), nullable=False),
        sa.Column("rule", sa.String(20), nullable=False),
        sa.Column("days_before_due", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cap_minor", sa.BigInteger),
        sa.Column("excluded_kinds", JSONB, nullable=False, server_default="[]"),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("inactive_reason", sa.String(200)),
        _now("updated_at"),
    )
    op.create_table(
        "payments",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("request_fingerprint", sa.String(64)),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("payment_method_id", UUID(as_uuid=True), sa.ForeignKey("payment_methods.id"), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("credit_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("fee_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("disputed_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
        _ts("next_attempt_at", index=True),
        sa.Column("last_decline_code", sa.String(64)),
        sa.Column("stripe_payment_intent_id", sa.String(64), index=True),
        sa.Column("stripe_charge_id", sa.String(64), index=True),
        sa.Column("installment_part_id", UUID(as_uuid=True)),
        _now("created_at"),
        _ts("settled_at"),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
        sa.CheckConstraint("amount_minor > 0", name="payments_amount_positive"),
        sa.CheckConstraint("refunded_minor <= amount_minor", name="payments_refund_within_amount"),
    )
    op.create_table(
        "payment_allocations",
        sa.Column("payment_id", UUID(as_uuid=True), sa.ForeignKey("payments.id"), primary_key=True),
        sa.Column("invoice_id", sa.String(128), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("refunded_minor", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint("amount_minor > 0", name="allocations_amount_positive"),
    )
    op.create_table(
        "payment_attempts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("payment_id", UUID(as_uuid=True), sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("payment_method_id", UUID(as_uuid=True), sa.ForeignKey("payment_methods.id"),
                  nullable=False, index=True),
        sa.Column("attempt_no", sa.Integer, nullable=False),
        sa.Column("client_initiated", sa.Boolean, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="created"),
        sa.Column("decline_code", sa.String(64)),
        sa.Column("failure_message", sa.String(500)),
        sa.Column("stripe_payment_intent_id", sa.String(64)),
        _ts("created_at", nullable=False),
        _ts("completed_at"),
        sa.UniqueConstraint("payment_id", "attempt_no"),
    )
    op.create_table(
        "refunds",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("payment_id", UUID(as_uuid=True), sa.ForeignKey("payments.id"), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False, server_default="created"),
        sa.Column("stripe_refund_id", sa.String(64)),
        _now("created_at"),
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
    )
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(64)),
        sa.Column("payload", JSONB, nullable=False),
        _now("received_at"),
        _ts("handled_at"),
        sa.Column("outcome", sa.String(200)),
    )


def downgrade() -> None:
    for table in ("stripe_events", "refunds", "payment_attempts", "payment_allocations", "payments",
                  "autopay_enrollments", "payment_methods", "credit_memos", "invoices", "clients"):
        op.drop_table(table)
