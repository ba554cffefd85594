"""The single-use states of OAuth consents.

Revision ID: 0004
Revises: 0003
"""
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A consent's state is sealed and expires by itself; recording its nonce when the callback uses it
    # makes it single-use, so a reloaded or replayed callback cannot reset a working connection.
    op.execute("""CREATE TABLE gl_consent_states (
        nonce TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        used_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""")
    op.execute("CREATE INDEX gl_consent_states_expiry ON gl_consent_states (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE gl_consent_states")
