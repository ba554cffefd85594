"""Alembic glue shared by the services: env.py runner, backbone tables, upgrade and database creation."""
from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command, context, op
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_engine_from_config

from payloop.db import asyncpg_dsn

BACKBONE_STATEMENTS: tuple[str, ...] = (
    """CREATE TABLE outbox (
        seq        BIGSERIAL PRIMARY KEY,
        event_id   UUID NOT NULL UNIQUE,
        topic      TEXT NOT NULL,
        key        TEXT NOT NULL,
        headers    JSONB NOT NULL,
        payload    BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        sent_at    TIMESTAMPTZ
    )""",
    "CREATE INDEX outbox_unsent ON outbox (seq) WHERE sent_at IS NULL",
    """CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('payloop_outbox', '');
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify()",
    """CREATE TABLE inbox (
        consumer_group TEXT NOT NULL,
        event_id       UUID NOT NULL,
        event_type     TEXT NOT NULL,
        processed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer_group, event_id)
    )""",
    """CREATE TABLE tenant_profiles (
        tenant_id   TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        timezone    TEXT NOT NULL,
        currency    CHAR(3) NOT NULL,
        branding    JSONB NOT NULL DEFAULT '{}',
        settings    JSONB NOT NULL DEFAULT '{}',
        event_id    UUID NOT NULL,
        occurred_at TIMESTAMPTZ NOT NULL,
        updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)


def create_backbone_tables() -> None:
    """Outbox, inbox and the tenant-profile replica: called by each service's first migration."""
    for statement in BACKBONE_STATEMENTS:
        op.execute(statement)


def drop_backbone_tables() -> None:
    for statement in ("DROP TABLE tenant_profiles", "DROP TABLE inbox", "DROP TABLE outbox",
                      "DROP FUNCTION outbox_notify()"):
        op.execute(statement)


def run_env(target_metadata: MetaData) -> None:
    """Body of every service's `migrations/env.py` (online, async engine)."""
    config = context.config

    def do_run(connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = async_engine_from_config(config.get_section(config.config_ini_section, {}),
                                          prefix="sqlalchemy.", poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
        await engine.dispose()

    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                          literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(run_async())


def alembic_config(migrations_dir: Path, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(migrations_dir: Path, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(migrations_dir, url), revision)


async def ensure_database(url: str) -> bool:
    """Create the URL's database if missing (dev and tests; production databases are provisioned)."""
    parsed = make_url(url)
    name = parsed.database
    admin_dsn = asyncpg_dsn(parsed.set(database="postgres").render_as_string(hide_password=False))
    conn = await asyncpg.connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
        return not exists
    finally:
        await conn.close()
