"""Won disputes in the journal: the return of a dispute's funds is an entry of its own purpose.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _purposes(*purposes: str) -> None:
    op.execute("ALTER TABLE gl_entries DROP CONSTRAINT gl_entries_purpose_check")
    op.execute(f"""ALTER TABLE gl_entries ADD CONSTRAINT gl_entries_purpose_check
                   CHECK (purpose IN ({", ".join(f"'{p}'" for p in purposes)}))""")


def upgrade() -> None:
    _purposes("payment", "deposit", "refund", "dispute", "dispute_won")


def downgrade() -> None:
    won = "SELECT id FROM gl_entries WHERE purpose = 'dispute_won'"
    op.execute(f"DELETE FROM gl_exceptions WHERE entry_id IN ({won})")
    op.execute(f"DELETE FROM gl_journal_lines WHERE entry_id IN ({won})")
    op.execute("DELETE FROM gl_entries WHERE purpose = 'dispute_won'")
    _purposes("payment", "deposit", "refund", "dispute")
