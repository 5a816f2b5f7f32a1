"""Alembic run programmatically on the repository's own (async) engine: ``spoton db`` and server start-up.

Everything that changes the schema — the Alembic migrations, and after them the TimescaleDB extension, its
hypertables, policies and aggregate — runs inside `schema_lock`: on PostgreSQL one connection holds a
session-level advisory lock and does all of it, so servers starting together on one database take turns (the
later ones find everything in place and change nothing). A transaction-scoped lock would end with the Alembic
transaction and leave the TimescaleDB statements, which must run outside a transaction, racing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
LOCK_KEY = 0x5350_4F54  # "SPOT"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


@asynccontextmanager
async def schema_lock(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection that holds the schema lock until the block ends; do every schema change on it.

    PostgreSQL: ``pg_advisory_lock`` (session level, so it outlives the transactions run on the connection);
    a second caller waits here. Other databases: a plain connection (SQLite callers take a file lock).
    """
    async with engine.connect() as conn:
        if conn.dialect.name != "postgresql":
            yield conn
            return
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        await conn.commit()
        try:
            yield conn
        finally:
            try:
                if conn.in_transaction():
                    await conn.rollback()
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
                await conn.commit()
            except Exception as exc:  # never return a connection that may still hold the lock to the pool
                log.warning("could not release the schema lock cleanly (%s); dropping the connection", exc)
                await conn.invalidate()


async def _run_on(conn: AsyncConnection, action: Callable[[Config], None]) -> None:
    def on_connection(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        action(cfg)

    await conn.run_sync(on_connection)
    await conn.commit()


async def upgrade_on(conn: AsyncConnection, revision: str = "head") -> None:
    """Alembic upgrade on a connection that holds `schema_lock`."""
    await _run_on(conn, lambda cfg: command.upgrade(cfg, revision))


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Alembic upgrade alone, under the schema lock (the repository's ``upgrade`` adds TimescaleDB)."""
    async with schema_lock(engine) as conn:
        await upgrade_on(conn, revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    async with schema_lock(engine) as conn:
        await _run_on(conn, lambda cfg: command.downgrade(cfg, revision))


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def current_revision_on(conn: AsyncConnection) -> str | None:
    revision = await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
    await conn.commit()
    return revision
