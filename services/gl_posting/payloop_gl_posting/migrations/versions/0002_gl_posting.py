"""Connections, account mapping, invoices seen, id map, the journal and its exceptions.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATEMENTS = (
    """CREATE TABLE gl_connections (
        tenant_id TEXT PRIMARY KEY,
        system TEXT NOT NULL CHECK (system IN ('quickbooks', 'xero')),
        status TEXT NOT NULL,
        company_id TEXT NOT NULL,
        redirect_uri TEXT NOT NULL,
        authorization_code_enc TEXT,
        access_token_enc TEXT,
        refresh_token_enc TEXT,
        access_expires_at TIMESTAMPTZ,
        last_error TEXT,
        connected_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE gl_account_mappings (
        tenant_id TEXT PRIMARY KEY,
        clearing_account_id TEXT NOT NULL,
        bank_account_id TEXT NOT NULL,
        fee_account_id TEXT NOT NULL,
        refunds_account_id TEXT NOT NULL,
        receivable_account_id TEXT,
        refund_item_id TEXT,
        customer_rule TEXT NOT NULL DEFAULT 'invoice_customer',
        validated_at TIMESTAMPTZ,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE gl_invoices (
        tenant_id TEXT NOT NULL,
        invoice_id TEXT NOT NULL,
        number TEXT NOT NULL,
        client_id TEXT,
        currency CHAR(3) NOT NULL,
        total_minor BIGINT NOT NULL,
        balance_minor BIGINT NOT NULL,
        status TEXT NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, invoice_id)
    )""",
    """CREATE TABLE gl_id_map (
        tenant_id TEXT NOT NULL,
        system TEXT NOT NULL,
        kind TEXT NOT NULL,
        our_id TEXT NOT NULL,
        external_id TEXT NOT NULL,
        extra JSONB NOT NULL DEFAULT '{}',
        PRIMARY KEY (tenant_id, system, kind, our_id)
    )""",
    "CREATE SEQUENCE gl_entries_seq",
    """CREATE TABLE gl_entries (
        id UUID PRIMARY KEY,
        seq BIGINT NOT NULL DEFAULT nextval('gl_entries_seq'),
        tenant_id TEXT NOT NULL,
        source_event_id UUID NOT NULL,
        purpose TEXT NOT NULL CHECK (purpose IN ('payment', 'deposit', 'refund', 'dispute')),
        subject_id TEXT NOT NULL,
        client_id TEXT,
        currency CHAR(3) NOT NULL,
        occurred_on DATE NOT NULL,
        reference TEXT NOT NULL,
        details JSONB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sending', 'posted', 'failed')),
        system TEXT,
        external_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        may_have_applied BOOLEAN NOT NULL DEFAULT false,
        next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        lease_until TIMESTAMPTZ,
        last_error TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        posted_at TIMESTAMPTZ,
        UNIQUE (tenant_id, source_event_id, purpose)
    )""",
    "CREATE INDEX gl_entries_due ON gl_entries (next_attempt_at, seq) WHERE state IN ('pending', 'sending')",
    "CREATE INDEX gl_entries_subject ON gl_entries (tenant_id, purpose, subject_id)",
    """CREATE TABLE gl_journal_lines (
        entry_id UUID NOT NULL REFERENCES gl_entries (id),
        line_no INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        account TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        memo TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (entry_id, line_no)
    )""",
    # Each entry balances; checked at commit so the lines of one entry can be inserted one by one.
    """CREATE FUNCTION gl_entry_balances() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF (SELECT coalesce(sum(amount_minor), 0) FROM gl_journal_lines WHERE entry_id = NEW.entry_id) <> 0 THEN
            RAISE EXCEPTION 'journal entry % does not balance', NEW.entry_id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE CONSTRAINT TRIGGER gl_entry_balances AFTER INSERT OR UPDATE ON gl_journal_lines
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION gl_entry_balances()""",
    """CREATE TABLE gl_exceptions (
        id UUID PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        entry_id UUID NOT NULL REFERENCES gl_entries (id),
        reason TEXT NOT NULL,
        detail TEXT NOT NULL,
        retryable BOOLEAN NOT NULL,
        status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
        occurrences INTEGER NOT NULL DEFAULT 1,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        resolved_at TIMESTAMPTZ
    )""",
    "CREATE UNIQUE INDEX gl_exceptions_one_open ON gl_exceptions (entry_id) WHERE status = 'open'",
    "CREATE INDEX gl_exceptions_tenant ON gl_exceptions (tenant_id, status, created_at)",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in ("gl_exceptions", "gl_journal_lines", "gl_entries", "gl_id_map", "gl_invoices",
                  "gl_account_mappings", "gl_connections"):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP FUNCTION gl_entry_balances()")
    op.execute("DROP SEQUENCE gl_entries_seq")
