"""Drill effects: one row per application, deliberately without a unique constraint.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE drill_effects (id BIGSERIAL PRIMARY KEY, event_id UUID NOT NULL, key TEXT NOT NULL, "
               "seq INT NOT NULL, pid INT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    op.execute("CREATE TABLE drill_keys (key TEXT PRIMARY KEY, last_seq INT NOT NULL)")
    op.execute("CREATE TABLE drill_order_violations (key TEXT NOT NULL, expected INT NOT NULL, got INT NOT NULL)")
    op.execute("CREATE TABLE drill_fixes (event_id UUID PRIMARY KEY)")


def downgrade() -> None:
    for table in ("drill_fixes", "drill_order_violations", "drill_keys", "drill_effects"):
        op.execute(f"DROP TABLE {table}")
