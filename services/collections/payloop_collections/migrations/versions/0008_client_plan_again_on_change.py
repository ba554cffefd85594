"""A client's invoices are planned again when the client changes, not whenever its row is written.

Migration 0006's trigger fired on any update that left the row different, and every write sets
`updated_at`: a client rewritten with the values it had (its drift flag recomputed on each payment,
a `client.upserted` delivered again) had all of its open invoices planned again for nothing.

Revision ID: 0008
Revises: 0007
"""
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP TRIGGER client_plan_again ON clients")
    op.execute("CREATE TRIGGER client_plan_again AFTER UPDATE ON clients FOR EACH ROW "
               "WHEN ((to_jsonb(OLD) - 'updated_at') IS DISTINCT FROM (to_jsonb(NEW) - 'updated_at')) "
               "EXECUTE FUNCTION client_plan_again()")


def downgrade() -> None:
    op.execute("DROP TRIGGER client_plan_again ON clients")
    op.execute("CREATE TRIGGER client_plan_again AFTER UPDATE ON clients FOR EACH ROW "
               "WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION client_plan_again()")
