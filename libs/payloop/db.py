"""Database engines and sessions: one session per request or consumed batch, committed in one place.

Code inside a unit of work only `flush()`es; the FastAPI dependency `db_session` (or the consumer
runtime) commits, or rolls back on error.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy import URL, MetaData
from sqlalchemy.orm import DeclarativeBase, registry


class Base(DeclarativeBase):
    """Base of each service's ORM models.

    A service declares one abstract subclass (`class PaymentsBase(Base): __abstract__ = True`) and
    gets a registry and `MetaData` of its own, so two services may both have a `clients` table when
    one process (a test) loads them together.
    """

    __abstract__ = True

    def __init_subclass__(cls, **kwargs) -> None:
        if cls.__dict__.get("__abstract__") and Base in cls.__bases__ and "registry" not in cls.__dict__:
            cls.registry = registry(metadata=MetaData())
            cls.metadata = cls.registry.metadata
        super().__init_subclass__(**kwargs)


# Plan every execution of a prepared statement for its own parameters and the tables' current size.
# PostgreSQL otherwise switches a connection's statement to a generic plan after five executions, and
# one chosen while a table was still empty stays: reporting's refresh kept scanning its invoices that
# way (18 ms a call instead of 4 at 15,000 invoices; docs/benchmarks.md). Planning costs microseconds.
SERVER_SETTINGS = {"plan_cache_mode": "force_custom_plan"}


def make_engine(url: str | URL, *, pool_size: int = 10, max_overflow: int = 10,
                pre_ping: bool = True) -> AsyncEngine:
    """`pre_ping` tests each connection as it leaves the pool (a round trip), so a request never gets one
    the server dropped; a caller that retries on a lost connection anyway can go without."""
    return create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=pre_ping,
                               connect_args={"server_settings": SERVER_SETTINGS})


def make_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def asyncpg_dsn(url: str) -> str:
    """The plain libpq DSN asyncpg wants, from a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: the request's unit of work, committed when the handler returns."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
