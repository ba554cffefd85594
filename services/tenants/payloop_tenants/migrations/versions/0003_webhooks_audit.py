"""Partner webhooks (endpoints, messages, deliveries, attempts) and the audit log.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_now = sa.func.now()


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("event_types", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("status", sa.String(16), nullable=False, server_default="enabled"),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("secret_encrypted", sa.Text, nullable=False),
        sa.Column("previous_secret_encrypted", sa.Text),
        sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    )
    op.create_table(
        "webhook_messages",
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    )
    op.create_index("webhook_messages_tenant_time", "webhook_messages", ["tenant_id", "occurred_at"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.Uuid, sa.ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("event_id", sa.Uuid, sa.ForeignKey("webhook_messages.event_id"), nullable=False),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("replay_of", sa.Uuid),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    # The sender looks for each endpoint's oldest pending delivery.
    op.create_index("webhook_deliveries_pending", "webhook_deliveries", ["endpoint_id", "seq"],
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("webhook_deliveries_endpoint", "webhook_deliveries", ["endpoint_id", "created_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("delivery_id", sa.Uuid, sa.ForeignKey("webhook_deliveries.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_url", sa.Text, nullable=False),
        sa.Column("request_headers", JSONB, nullable=False),
        sa.Column("request_bytes", sa.Integer, nullable=False),
        sa.Column("response_status", sa.Integer),
        sa.Column("response_excerpt", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Integer, nullable=False),
    )
    op.create_table(
        "audit_entries",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("actor_subject", sa.Text, nullable=False),
        sa.Column("actor_scopes", ARRAY(sa.Text), nullable=False),
        sa.Column("target_type", sa.String(64), nullable=False),
        sa.Column("target_id", sa.Text, nullable=False),
        sa.Column("details", JSONB, nullable=False),
        sa.Column("event_id", sa.Uuid, nullable=False),
    )
    op.create_index("audit_entries_tenant_seq", "audit_entries", ["tenant_id", "seq"])


def downgrade() -> None:
    for table in ("audit_entries", "webhook_attempts", "webhook_deliveries", "webhook_messages",
                  "webhook_endpoints"):
        op.drop_table(table)
