"""Read models: clients, agreements, invoices with their balance reductions, payments, collection
state, timeline, payouts, GL postings and exceptions.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TABLES = ("exceptions", "gl_postings", "payouts", "tickets", "timeline", "payment_failures", "payments",
          "invoice_voids", "invoice_reductions", "invoices", "agreements", "autopay_changes", "clients")

STATEMENTS = (
    """CREATE TABLE clients (
        tenant_id TEXT NOT NULL, client_id TEXT NOT NULL,
        name TEXT, psa_source TEXT, terms TEXT, billing_emails JSONB NOT NULL DEFAULT '[]',
        profile_at TIMESTAMPTZ,
        autopay_enrolled BOOLEAN NOT NULL DEFAULT false, autopay_method_id TEXT, autopay_at TIMESTAMPTZ,
        collection_state TEXT NOT NULL DEFAULT 'none', collection_level TEXT, collection_step INTEGER,
        collection_case_id TEXT, paused_reason TEXT, paused_until DATE, promised_on DATE,
        promised_minor BIGINT, collection_at TIMESTAMPTZ,
        PRIMARY KEY (tenant_id, client_id))""",
    """CREATE TABLE autopay_changes (
        tenant_id TEXT NOT NULL, event_id UUID NOT NULL, client_id TEXT NOT NULL,
        enrolled BOOLEAN NOT NULL, occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, event_id))""",
    "CREATE INDEX autopay_changes_client ON autopay_changes (tenant_id, client_id, occurred_at)",
    """CREATE TABLE agreements (
        tenant_id TEXT NOT NULL, agreement_id TEXT NOT NULL, client_id TEXT NOT NULL,
        kind TEXT NOT NULL, name TEXT NOT NULL, billing_cycle TEXT, starts_on DATE, ends_on DATE,
        lines JSONB NOT NULL DEFAULT '[]', occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, agreement_id))""",
    "CREATE INDEX agreements_client ON agreements (tenant_id, client_id)",
    # balance_minor is derived (see read_models.refresh_invoices); psa_* is what the PSA last said.
    """CREATE TABLE invoices (
        tenant_id TEXT NOT NULL, invoice_id TEXT NOT NULL, client_id TEXT NOT NULL,
        number TEXT NOT NULL, agreement_id TEXT, agreement_kind TEXT, currency CHAR(3) NOT NULL,
        issued_on DATE NOT NULL, due_on DATE NOT NULL, terms TEXT,
        psa_status TEXT NOT NULL, total_minor BIGINT NOT NULL, psa_balance_minor BIGINT NOT NULL,
        snapshot_at TIMESTAMPTZ NOT NULL, voided_at TIMESTAMPTZ,
        reduced_minor BIGINT NOT NULL DEFAULT 0, outside_paid_minor BIGINT NOT NULL DEFAULT 0,
        outside_paid_at TIMESTAMPTZ,
        balance_minor BIGINT NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'open',
        paid_at TIMESTAMPTZ, last_payment_at TIMESTAMPTZ,
        failed_attempts INTEGER NOT NULL DEFAULT 0, next_retry_at TIMESTAMPTZ,
        disputed BOOLEAN NOT NULL DEFAULT false, promised_on DATE,
        last_reminder_step INTEGER, last_reminder_level TEXT, last_reminder_at TIMESTAMPTZ,
        PRIMARY KEY (tenant_id, invoice_id))""",
    # The aging queries read only open invoices: partial indexes keep them small at 1M rows, and
    # each serves one sort order of the keyset pagination (plus the per-client roll-up).
    """CREATE INDEX invoices_open_by_client ON invoices (tenant_id, client_id, due_on, invoice_id)
        INCLUDE (balance_minor, currency) WHERE balance_minor > 0""",
    "CREATE INDEX invoices_open_by_due ON invoices (tenant_id, due_on, invoice_id) WHERE balance_minor > 0",
    """CREATE INDEX invoices_open_by_balance ON invoices (tenant_id, balance_minor, invoice_id)
        WHERE balance_minor > 0""",
    "CREATE INDEX invoices_open_by_number ON invoices (tenant_id, number, invoice_id) WHERE balance_minor > 0",
    "CREATE INDEX invoices_client_issued ON invoices (tenant_id, client_id, issued_on)",
    # Every balance reduction we know of: payment allocations (+), refunds (-), credit memos (+).
    # reduced_on is set when the fact is a calendar date (a credit memo's issue date); otherwise the
    # date is reduced_at in the tenant's timezone.
    """CREATE TABLE invoice_reductions (
        tenant_id TEXT NOT NULL, invoice_id TEXT NOT NULL, source TEXT NOT NULL, source_id TEXT NOT NULL,
        amount_minor BIGINT NOT NULL, reduced_at TIMESTAMPTZ NOT NULL, reduced_on DATE,
        PRIMARY KEY (tenant_id, invoice_id, source, source_id))""",
    # A void may arrive before the invoice it voids.
    """CREATE TABLE invoice_voids (
        tenant_id TEXT NOT NULL, invoice_id TEXT NOT NULL, voided_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, invoice_id))""",
    """CREATE TABLE payments (
        tenant_id TEXT NOT NULL, payment_id TEXT NOT NULL, client_id TEXT,
        currency CHAR(3) NOT NULL, amount_minor BIGINT NOT NULL, fee_minor BIGINT NOT NULL DEFAULT 0,
        refunded_minor BIGINT NOT NULL DEFAULT 0, status TEXT NOT NULL, status_at TIMESTAMPTZ NOT NULL,
        method_type TEXT, method_brand TEXT, method_last4 TEXT, attempt INTEGER NOT NULL DEFAULT 1,
        settled_at TIMESTAMPTZ, allocations JSONB NOT NULL DEFAULT '[]', refunds JSONB NOT NULL DEFAULT '{}',
        PRIMARY KEY (tenant_id, payment_id))""",
    "CREATE INDEX payments_client ON payments (tenant_id, client_id, status_at)",
    """CREATE TABLE payment_failures (
        tenant_id TEXT NOT NULL, event_id UUID NOT NULL, payment_id TEXT NOT NULL, client_id TEXT,
        attempt INTEGER NOT NULL, decline_code TEXT, retryable BOOLEAN NOT NULL,
        next_attempt_at TIMESTAMPTZ, amount_minor BIGINT NOT NULL, currency CHAR(3) NOT NULL,
        invoice_ids JSONB NOT NULL, occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, event_id))""",
    "CREATE INDEX payment_failures_payment ON payment_failures (tenant_id, payment_id, occurred_at)",
    "CREATE INDEX payment_failures_client ON payment_failures (tenant_id, client_id)",
    """CREATE TABLE timeline (
        tenant_id TEXT NOT NULL, event_id UUID NOT NULL, client_id TEXT,
        occurred_at TIMESTAMPTZ NOT NULL, kind TEXT NOT NULL, summary TEXT NOT NULL,
        amount_minor BIGINT, currency CHAR(3), invoice_ids JSONB NOT NULL DEFAULT '[]',
        data JSONB NOT NULL DEFAULT '{}',
        PRIMARY KEY (tenant_id, event_id))""",
    "CREATE INDEX timeline_client ON timeline (tenant_id, client_id, occurred_at DESC)",
    """CREATE TABLE tickets (
        tenant_id TEXT NOT NULL, ticket_id TEXT NOT NULL, client_id TEXT, invoice_ids JSONB NOT NULL,
        open BOOLEAN NOT NULL, summary TEXT, occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, ticket_id))""",
    """CREATE TABLE payouts (
        tenant_id TEXT NOT NULL, payout_id TEXT NOT NULL, arrival_date DATE NOT NULL,
        amount_minor BIGINT NOT NULL, currency CHAR(3) NOT NULL, items JSONB NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, payout_id))""",
    """CREATE TABLE gl_postings (
        tenant_id TEXT NOT NULL, entry_id TEXT NOT NULL, system TEXT NOT NULL, purpose TEXT NOT NULL,
        external_id TEXT NOT NULL, posted_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, entry_id))""",
    """CREATE TABLE exceptions (
        tenant_id TEXT NOT NULL, exception_id TEXT NOT NULL, kind TEXT NOT NULL, client_id TEXT,
        subject_id TEXT NOT NULL, title TEXT NOT NULL, detail TEXT NOT NULL, action TEXT NOT NULL,
        action_href TEXT, retryable BOOLEAN NOT NULL DEFAULT false, next_attempt_at TIMESTAMPTZ,
        occurred_at TIMESTAMPTZ NOT NULL, resolved_at TIMESTAMPTZ,
        PRIMARY KEY (tenant_id, exception_id))""",
    "CREATE INDEX exceptions_open ON exceptions (tenant_id, occurred_at DESC, exception_id) WHERE resolved_at IS NULL",
)


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE {table}")
