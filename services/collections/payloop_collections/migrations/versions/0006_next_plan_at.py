"""When the scheduler next plans each open invoice, kept by the database itself.

The scheduler used to plan every open invoice of every tenant on every tick. Now it plans only
invoices whose `next_plan_at` has come, and stores the next instant at which time alone could change
an invoice's plan. Any change to what a plan is made of sets that instant back to `-infinity` (plan
at the next tick), here in triggers rather than in each code path that writes, so no new write path
can forget it:
- an invoice row updated by anything but the scheduler's own `next_plan_at` write;
- a payment allocated, reduced or removed (the balance);
- a client changed (auto-pay, pause, drift, policy, contacts): its invoices;
- a promise made, kept or broken: its client's invoices;
- a policy or the tenant's profile (time zone, holidays) changed: the tenant's invoices.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN = "status IN ('open', 'partially_paid')"

STATEMENTS = (
    "ALTER TABLE invoices ADD COLUMN next_plan_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'",
    f"CREATE INDEX invoices_next_plan ON invoices (next_plan_at) WHERE {OPEN}",
    # The scheduler's write is the only one that changes next_plan_at to a future instant, and it
    # always differs from the value it read (which had come): every other update means "plan again".
    """CREATE FUNCTION invoice_plan_again() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.next_plan_at IS NOT DISTINCT FROM OLD.next_plan_at THEN
            NEW.next_plan_at := '-infinity';
        END IF;
        RETURN NEW;
    END $$""",
    "CREATE TRIGGER invoice_plan_again BEFORE UPDATE ON invoices FOR EACH ROW EXECUTE FUNCTION invoice_plan_again()",
    """CREATE FUNCTION payment_plan_again() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed invoice_payments;
    BEGIN
        changed := COALESCE(NEW, OLD);
        UPDATE invoices SET next_plan_at = '-infinity'
         WHERE tenant_id = changed.tenant_id AND invoice_id = changed.invoice_id;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER payment_plan_again AFTER INSERT OR UPDATE OR DELETE ON invoice_payments "
    "FOR EACH ROW EXECUTE FUNCTION payment_plan_again()",
    """CREATE FUNCTION client_plan_again() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed RECORD;
    BEGIN
        IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
        UPDATE invoices SET next_plan_at = '-infinity'
         WHERE tenant_id = changed.tenant_id AND client_id = changed.client_id AND """ + OPEN + """;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER client_plan_again AFTER UPDATE ON clients FOR EACH ROW "
    "WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION client_plan_again()",
    "CREATE TRIGGER promise_plan_again AFTER INSERT OR UPDATE OR DELETE ON promises "
    "FOR EACH ROW EXECUTE FUNCTION client_plan_again()",
    """CREATE FUNCTION tenant_plan_again() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        changed RECORD;
    BEGIN
        IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
        UPDATE invoices SET next_plan_at = '-infinity' WHERE tenant_id = changed.tenant_id AND """ + OPEN + """;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER policy_plan_again AFTER INSERT OR UPDATE OR DELETE ON policies "
    "FOR EACH ROW EXECUTE FUNCTION tenant_plan_again()",
    "CREATE TRIGGER profile_plan_again AFTER INSERT OR UPDATE ON tenant_profiles "
    "FOR EACH ROW EXECUTE FUNCTION tenant_plan_again()",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for trigger, table in (("profile_plan_again", "tenant_profiles"), ("policy_plan_again", "policies"),
                           ("promise_plan_again", "promises"), ("client_plan_again", "clients"),
                           ("payment_plan_again", "invoice_payments"), ("invoice_plan_again", "invoices")):
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    for function in ("tenant_plan_again", "client_plan_again", "payment_plan_again", "invoice_plan_again"):
        op.execute(f"DROP FUNCTION {function}()")
    op.execute("DROP INDEX invoices_next_plan")
    op.execute("ALTER TABLE invoices DROP COLUMN next_plan_at")
