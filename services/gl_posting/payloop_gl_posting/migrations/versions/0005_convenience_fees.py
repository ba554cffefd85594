"""Card convenience fees: an entry purpose of their own and the income account they are mapped to.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _purposes(*purposes: str) -> None:
    op.execute("ALTER TABLE gl_entries DROP CONSTRAINT gl_entries_purpose_check")
    op.execute(f"""ALTER TABLE gl_entries ADD CONSTRAINT gl_entries_purpose_check
                   CHECK (purpose IN ({", ".join(f"'{p}'" for p in purposes)}))""")


def upgrade() -> None:
    _purposes("payment", "deposit", "refund", "dispute", "dispute_won", "convenience_fee")
    # Optional: a tenant that charges no convenience fee needs no income account for it.
    op.execute("ALTER TABLE gl_account_mappings ADD COLUMN convenience_fee_account_id TEXT")


def downgrade() -> None:
    fees = "SELECT id FROM gl_entries WHERE purpose = 'convenience_fee'"
    op.execute(f"DELETE FROM gl_exceptions WHERE entry_id IN ({fees})")
    op.execute(f"DELETE FROM gl_journal_lines WHERE entry_id IN ({fees})")
    op.execute("DELETE FROM gl_entries WHERE purpose = 'convenience_fee'")
    op.execute("ALTER TABLE gl_account_mappings DROP COLUMN convenience_fee_account_id")
    _purposes("payment", "deposit", "refund", "dispute", "dispute_won")
