"""Open balances per (client, currency, due date), kept by triggers on invoices.

Today's per-client aging then sums at most one row per client and due date instead of every open
invoice: a tenant's invoices share due dates (billing cycles), so this stays small where the
invoice count does not.

Revision ID: 0003
Revises: 0002
"""
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

STATEMENTS = (
    """CREATE TABLE open_balances (
        tenant_id TEXT NOT NULL, client_id TEXT NOT NULL, currency CHAR(3) NOT NULL, due_on DATE NOT NULL,
        balance_minor BIGINT NOT NULL, invoices INTEGER NOT NULL,
        PRIMARY KEY (tenant_id, currency, client_id, due_on))""",
    """CREATE FUNCTION open_balances_apply() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        remaining INTEGER;
    BEGIN
        IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.balance_minor > 0 THEN
            UPDATE open_balances SET balance_minor = balance_minor - OLD.balance_minor, invoices = invoices - 1
            WHERE tenant_id = OLD.tenant_id AND currency = OLD.currency AND client_id = OLD.client_id
              AND due_on = OLD.due_on
            RETURNING invoices INTO remaining;
            IF remaining = 0 THEN
                DELETE FROM open_balances WHERE tenant_id = OLD.tenant_id AND currency = OLD.currency
                    AND client_id = OLD.client_id AND due_on = OLD.due_on;
            END IF;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.balance_minor > 0 THEN
            INSERT INTO open_balances (tenant_id, client_id, currency, due_on, balance_minor, invoices)
            VALUES (NEW.tenant_id, NEW.client_id, NEW.currency, NEW.due_on, NEW.balance_minor, 1)
            ON CONFLICT (tenant_id, currency, client_id, due_on) DO UPDATE SET
                balance_minor = open_balances.balance_minor + EXCLUDED.balance_minor,
                invoices = open_balances.invoices + 1;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER invoices_open_balances_insert AFTER INSERT ON invoices
        FOR EACH ROW EXECUTE FUNCTION open_balances_apply()""",
    """CREATE TRIGGER invoices_open_balances_delete AFTER DELETE ON invoices
        FOR EACH ROW EXECUTE FUNCTION open_balances_apply()""",
    # The invoice refresh rewrites balance_minor every time; only a real change touches the totals.
    """CREATE TRIGGER invoices_open_balances_update AFTER UPDATE ON invoices
        FOR EACH ROW WHEN (OLD.balance_minor IS DISTINCT FROM NEW.balance_minor
                           OR OLD.due_on IS DISTINCT FROM NEW.due_on
                           OR OLD.client_id IS DISTINCT FROM NEW.client_id
                           OR OLD.currency IS DISTINCT FROM NEW.currency)
        EXECUTE FUNCTION open_balances_apply()""",
    """INSERT INTO open_balances (tenant_id, client_id, currency, due_on, balance_minor, invoices)
        SELECT tenant_id, client_id, currency, due_on, sum(balance_minor), count(*)
        FROM invoices WHERE balance_minor > 0 GROUP BY tenant_id, client_id, currency, due_on""",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table_trigger in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER invoices_open_balances_{table_trigger} ON invoices")
    op.execute("DROP FUNCTION open_balances_apply()")
    op.execute("DROP TABLE open_balances")
