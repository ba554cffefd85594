"""Collections: local clients and invoices, policies, steps, email, promises, tasks, timeline.

Revision ID: 0002
Revises: 0001
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

STATEMENTS = (
    """CREATE TABLE clients (
        tenant_id VARCHAR(64) NOT NULL, client_id VARCHAR(128) NOT NULL, case_id UUID NOT NULL,
        name VARCHAR(300) NOT NULL DEFAULT '', billing_emails JSONB NOT NULL DEFAULT '[]',
        timezone VARCHAR(64), autopay_enrolled BOOLEAN NOT NULL DEFAULT false, autopay_rule JSONB,
        policy_id VARCHAR(64), paused BOOLEAN NOT NULL DEFAULT false, paused_until DATE,
        drifting BOOLEAN NOT NULL DEFAULT false, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, client_id))""",
    """CREATE TABLE invoices (
        tenant_id VARCHAR(64) NOT NULL, invoice_id VARCHAR(128) NOT NULL, client_id VARCHAR(128) NOT NULL,
        number VARCHAR(64) NOT NULL, currency CHAR(3) NOT NULL, issued_on DATE NOT NULL, due_on DATE NOT NULL,
        status VARCHAR(20) NOT NULL, total_minor BIGINT NOT NULL, psa_balance_minor BIGINT NOT NULL,
        agreement JSONB, lines JSONB NOT NULL DEFAULT '[]', event_occurred_at TIMESTAMPTZ NOT NULL,
        dispute_ticket_id VARCHAR(128), installment_plan_id VARCHAR(128), payment_in_flight_id VARCHAR(128),
        retry_at TIMESTAMPTZ, retry_attempt INTEGER, autopay_failed BOOLEAN NOT NULL DEFAULT false,
        paid_on DATE,
        PRIMARY KEY (tenant_id, invoice_id))""",
    "CREATE INDEX invoices_open ON invoices (tenant_id, client_id) WHERE status IN ('open', 'partially_paid')",
    """CREATE TABLE invoice_payments (
        tenant_id VARCHAR(64) NOT NULL, payment_id VARCHAR(128) NOT NULL, invoice_id VARCHAR(128) NOT NULL,
        amount_minor BIGINT NOT NULL, settled_on DATE NOT NULL,
        PRIMARY KEY (tenant_id, payment_id, invoice_id))""",
    "CREATE INDEX invoice_payments_invoice ON invoice_payments (tenant_id, invoice_id)",
    """CREATE TABLE policies (
        tenant_id VARCHAR(64) NOT NULL, id VARCHAR(64) NOT NULL, name VARCHAR(200) NOT NULL,
        is_default BOOLEAN NOT NULL DEFAULT false, steps JSONB NOT NULL,
        business_days BOOLEAN NOT NULL DEFAULT true, send_hour INTEGER NOT NULL DEFAULT 9,
        quiet_start_hour INTEGER NOT NULL DEFAULT 20, quiet_end_hour INTEGER NOT NULL DEFAULT 8,
        drift_shift_days INTEGER NOT NULL DEFAULT 2, drift_firmer BOOLEAN NOT NULL DEFAULT true,
        autopay_courtesy BOOLEAN NOT NULL DEFAULT true, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, id))""",
    "CREATE UNIQUE INDEX policies_one_default ON policies (tenant_id) WHERE is_default",
    """CREATE TABLE messages (
        id UUID PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL, client_id VARCHAR(128) NOT NULL,
        local_date DATE NOT NULL, recipients JSONB NOT NULL, subject TEXT NOT NULL, html TEXT NOT NULL,
        text TEXT NOT NULL, level VARCHAR(20) NOT NULL, step INTEGER NOT NULL, template VARCHAR(64) NOT NULL,
        invoice_ids JSONB NOT NULL, status VARCHAR(20) NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TIMESTAMPTZ NOT NULL, last_error TEXT,
        sent_at TIMESTAMPTZ, created_at TIMESTAMPTZ NOT NULL,
        CONSTRAINT messages_one_per_day UNIQUE (tenant_id, client_id, local_date))""",
    "CREATE INDEX messages_pending ON messages (next_attempt_at) WHERE status = 'pending'",
    """CREATE TABLE reminder_steps (
        tenant_id VARCHAR(64) NOT NULL, invoice_id VARCHAR(128) NOT NULL, step_key VARCHAR(32) NOT NULL,
        client_id VARCHAR(128) NOT NULL, outcome VARCHAR(20) NOT NULL, offset_days INTEGER NOT NULL,
        level VARCHAR(20) NOT NULL, reason TEXT, message_id UUID REFERENCES messages (id),
        decided_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (tenant_id, invoice_id, step_key))""",
    """CREATE TABLE promises (
        id UUID PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL, client_id VARCHAR(128) NOT NULL,
        invoice_ids JSONB NOT NULL, promised_on DATE NOT NULL, amount_minor BIGINT NOT NULL,
        currency CHAR(3) NOT NULL, created_at TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX promises_client ON promises (tenant_id, client_id, promised_on)",
    """CREATE TABLE escalation_tasks (
        id UUID PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL, client_id VARCHAR(128) NOT NULL,
        case_id UUID NOT NULL, invoice_ids JSONB NOT NULL, level VARCHAR(20) NOT NULL,
        status VARCHAR(20) NOT NULL DEFAULT 'open', context JSONB NOT NULL, created_at TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX escalation_tasks_tenant ON escalation_tasks (tenant_id, status, created_at)",
    """CREATE TABLE timeline (
        id BIGSERIAL PRIMARY KEY, tenant_id VARCHAR(64) NOT NULL, client_id VARCHAR(128) NOT NULL,
        invoice_id VARCHAR(128), kind VARCHAR(32) NOT NULL, detail JSONB NOT NULL DEFAULT '{}',
        at TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX timeline_client ON timeline (tenant_id, client_id, id)",
    """CREATE TABLE email_opt_outs (
        tenant_id VARCHAR(64) NOT NULL, email VARCHAR(320) NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (tenant_id, email))""",
    """CREATE TABLE client_behaviour (
        tenant_id VARCHAR(64) NOT NULL, client_id VARCHAR(128) NOT NULL, samples INTEGER NOT NULL,
        average_days_to_pay DOUBLE PRECISION NOT NULL, recent_days_to_pay DOUBLE PRECISION,
        baseline_days_to_pay DOUBLE PRECISION, on_time_ratio DOUBLE PRECISION NOT NULL,
        drifting BOOLEAN NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, client_id))""",
)

TABLES = ("client_behaviour", "email_opt_outs", "timeline", "escalation_tasks", "promises", "reminder_steps",
          "messages", "policies", "invoice_payments", "invoices", "clients")


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TABLE {table}")
