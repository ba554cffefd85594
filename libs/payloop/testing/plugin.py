"""pytest plugin (loaded by the root pyproject's addopts) giving every test real infrastructure.

One embedded PostgreSQL (fsync off) and one Tansu broker per test session, started by the session
itself. Each service database is migrated once into a template; a test gets a fresh copy with
`CREATE DATABASE ... TEMPLATE` in milliseconds. Nothing of ours is mocked.
"""
from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from payloop.auth import mint_token
from payloop.db import asyncpg_dsn
from payloop.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from payloop.migrations import upgrade
from payloop.settings import platform_settings

REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Infra:
    postgres: EmbeddedPostgres
    broker: EmbeddedBroker
    root: Path
    _templates: dict[str, str] = field(default_factory=dict)
    _counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def url(self, database: str) -> str:
        return self.postgres.url(database)

    async def admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(asyncpg_dsn(self.url("postgres")))

    async def template(self, name: str, migrations_dir: Path) -> str:
        """The migrated template database of a service (or of any set of migrations)."""
        async with self._lock:
            if name not in self._templates:
                template = f"tpl_{name}"
                conn = await self.admin()
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{template}"')
                    await conn.execute(f'CREATE DATABASE "{template}"')
                finally:
                    await conn.close()
                await asyncio.to_thread(upgrade, migrations_dir, self.url(template))
                self._templates[name] = template
            return self._templates[name]

    async def fresh_database(self, name: str, migrations_dir: Path) -> str:
        """A new database migrated to head, as a SQLAlchemy URL."""
        template = await self.template(name, migrations_dir)
        database = f"t_{name}_{next(self._counter)}"
        conn = await self.admin()
        try:
            await conn.execute(f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
        finally:
            await conn.close()
        return self.url(database)

    def env(self) -> dict[str, str]:
        """Environment for child processes (services, CLI) that should use this infrastructure."""
        return {**os.environ, "PAYLOOP_KAFKA_BOOTSTRAP": self.bootstrap, "PAYLOOP_ENV": "test"}


@pytest.fixture(scope="session")
def infra(request) -> Infra:
    root = Path(tempfile.mkdtemp(prefix="payloop-test-"))
    postgres = EmbeddedPostgres(root / "postgres", free_port(), durable=False)
    broker = EmbeddedBroker(root / "broker", free_port())
    postgres.start()
    broker.start()
    saved = {k: os.environ.get(k) for k in ("PAYLOOP_KAFKA_BOOTSTRAP", "PAYLOOP_ENV")}
    os.environ["PAYLOOP_KAFKA_BOOTSTRAP"] = broker.bootstrap
    os.environ["PAYLOOP_ENV"] = "test"
    platform_settings.cache_clear()
    try:
        yield Infra(postgres=postgres, broker=broker, root=root)
    finally:
        broker.stop()
        postgres.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        platform_settings.cache_clear()
        if request.session.testsfailed:
            print(f"\nkept the test session's state (logs, databases) in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def token():
    """`token(tenant, *scopes)` -> an Authorization header value."""
    def _token(tenant: str, *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(tenant, list(scopes) or ['admin'])}"}
    return _token


_groups = itertools.count(1)


@asynccontextmanager
async def running_service(infra: Infra, service, *, consumers: bool = True, relay: bool = True
                          ) -> AsyncIterator[httpx.AsyncClient]:
    """A service app on a fresh database, its lifespan running, reached in-process through httpx.

    Its consumers join a group of their own (`<service>-test-N`), starting at the topics' beginning,
    so handlers must ignore other tests' tenants, as they ignore other tenants in production.
    `client.app.state` holds the session factory, producer and relay.
    """
    from dataclasses import replace

    from payloop.service import create_app

    service = replace(service, consumer_group=f"{service.name}-test-{next(_groups)}-{os.getpid()}")
    url = await infra.fresh_database(service.name, service.migrations_dir)
    flags = {"PAYLOOP_RUN_CONSUMERS": str(consumers).lower(), "PAYLOOP_RUN_RELAY": str(relay).lower()}
    saved = {k: os.environ.get(k) for k in flags}
    os.environ.update(flags)
    try:
        app = create_app(service, database_url=url)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                client.app = app  # type: ignore[attr-defined]
                yield client
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest_asyncio.fixture
async def db_url(infra: Infra):
    """`await db_url(service)` -> URL of a fresh, migrated database of that service."""
    async def _make(service) -> str:
        return await infra.fresh_database(service.name, service.migrations_dir)
    return _make


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory) -> str:
    """One in-memory localstripe for the session (payments' tests and the end-to-end tests share it)."""
    from payloop.simulators.localstripe_process import start_localstripe

    port = free_port()
    process = start_localstripe(port, tmp_path_factory.mktemp("localstripe"))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
