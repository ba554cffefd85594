"""PSA connections, sync runs, records as in the PSA, payment write-backs, webhook receipts.

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


def _timestamps() -> list[sa.Column]:
    return [sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
            sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "psa_connections",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False, index=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("base_url", sa.Text, nullable=False),
        sa.Column("credentials_encrypted", sa.Text, nullable=False),
        sa.Column("credentials_hint", JSONB, nullable=False, server_default="{}"),
        sa.Column("settings", JSONB, nullable=False, server_default="{}"),
        sa.Column("status", sa.String(20), nullable=False, server_default="active"),
        sa.Column("last_error", sa.Text),
        sa.Column("cursors", JSONB, nullable=False, server_default="{}"),
        sa.Column("poll_interval_s", sa.Integer, nullable=False, server_default="300"),
        sa.Column("next_sync_at", sa.DateTime(timezone=True)),
        sa.Column("sync_lease_until", sa.DateTime(timezone=True)),
        sa.Column("webhook_ids", JSONB, nullable=False, server_default="[]"),
        *_timestamps(),
    )
    op.create_index("ix_psa_connections_due", "psa_connections", ["next_sync_at"])
    op.create_table(
        "psa_sync_runs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False, index=True),
        sa.Column("connection_id", UUID(as_uuid=True), sa.ForeignKey("psa_connections.id", ondelete="CASCADE"),
                  nullable=False, index=True),
        sa.Column("trigger", sa.String(20), nullable=False),
        sa.Column("full", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("status", sa.String(20), nullable=False, server_default="running"),
        sa.Column("counts", JSONB, nullable=False, server_default="{}"),
        sa.Column("errors", JSONB, nullable=False, server_default="[]"),
        sa.Column("error", sa.Text),
        sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "psa_records",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False, index=True),
        sa.Column("connection_id", UUID(as_uuid=True), sa.ForeignKey("psa_connections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("external_id", sa.String(100), nullable=False),
        sa.Column("client_id", UUID(as_uuid=True)),
        sa.Column("number", sa.String(100)),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("data", JSONB, nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("connection_id", "kind", "external_id"),
    )
    op.create_index("ix_psa_records_number", "psa_records", ["connection_id", "kind", "number"])
    op.create_table(
        "psa_payment_writebacks",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False, index=True),
        sa.Column("connection_id", UUID(as_uuid=True), sa.ForeignKey("psa_connections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("payment_id", sa.String(100), nullable=False),
        sa.Column("invoice_id", UUID(as_uuid=True), nullable=False),
        sa.Column("client_id", UUID(as_uuid=True)),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("paid_on", sa.Date, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="pending"),
        sa.Column("external_id", sa.String(100)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("causation_id", sa.String(100)),
        sa.Column("correlation_id", sa.String(100)),
        *_timestamps(),
        sa.UniqueConstraint("tenant_id", "reference"),
    )
    op.create_index("ix_psa_payment_writebacks_due", "psa_payment_writebacks", ["status", "next_attempt_at"])
    op.create_table(
        "psa_webhook_receipts",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("tenant_id", sa.String(100), nullable=False, index=True),
        sa.Column("connection_id", UUID(as_uuid=True), sa.ForeignKey("psa_connections.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("message_id", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20)),
        sa.Column("external_id", sa.String(100)),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("connection_id", "message_id"),
    )


def downgrade() -> None:
    for table in ("psa_webhook_receipts", "psa_payment_writebacks", "psa_records", "psa_sync_runs",
                  "psa_connections"):
        op.drop_table(table)
