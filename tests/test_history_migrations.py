"""Schema migrations on empty PostgreSQL and SQLite databases; TimescaleDB detection and the plain fallback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from app.cli import main as cli_main
from app.core.config import Settings
from app.stores.history import migrate
from app.stores.history.repository import build_history_repository, normalise_url
from app.stores.history.tables import metadata
from app.stores.history.timescale import apply_timescale, detect_extension, setup_statements
from tests.history_support import fresh_pg_database, pg_url, sqlite_url

TABLES = {"tracking_events", "identity_events", "task_runs"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    database = fresh_pg_database() if request.param == "postgresql" else contextlib.nullcontext("")
    with database as name:
        yield pg_url(name) if request.param == "postgresql" else sqlite_url(tmp_path / "h.db")


def _schema(sync: Connection) -> dict[str, Any]:
    insp = inspect(sync)
    tables = set(insp.get_table_names()) - {"alembic_version"}
    return {
        "tables": tables,
        "indexes": {t: {i["name"] for i in insp.get_indexes(t)} for t in tables},
        "unique": {t: {u["name"] for u in insp.get_unique_constraints(t)} for t in tables},
        "diff": compare_metadata(MigrationContext.configure(sync), metadata),
    }


def run(url: str, fn: Any) -> Any:
    async def go() -> Any:
        repo = build_history_repository(Settings(database_url=url))
        try:
            return await fn(repo)
        finally:
            await repo.dispose()

    return asyncio.run(go())


async def _inspect(repo: Any) -> dict[str, Any]:
    async with repo.engine.connect() as conn:
        return dict(await conn.run_sync(_schema))


def test_upgrade_creates_the_schema_and_round_trips(empty_db: str) -> None:
    assert run(empty_db, lambda r: migrate.current_revision(r.engine)) is None
    described = run(empty_db, lambda r: r.prepare())
    assert described.startswith(f"revision {migrate.head_revision()}") and "plain tables" in described

    schema = run(empty_db, _inspect)
    assert schema["tables"] == TABLES
    assert schema["diff"] == []  # the migrations build exactly the tables the code writes
    assert {
        "ix_tracking_events_time",
        "ix_tracking_events_env_time",
        "ix_tracking_events_gid_time",
        "ix_tracking_events_camera_time",
    } <= schema["indexes"]["tracking_events"]
    assert "uq_tracking_events_key" in schema["unique"]["tracking_events"]
    assert "uq_identity_events_key" in schema["unique"]["identity_events"]

    run(empty_db, lambda r: r.prepare())  # again: nothing to do, nothing breaks
    run(empty_db, lambda r: migrate.downgrade(r.engine, "base"))
    assert run(empty_db, _inspect)["tables"] == set()
    assert run(empty_db, lambda r: migrate.current_revision(r.engine)) is None
    run(empty_db, lambda r: migrate.upgrade(r.engine))
    assert run(empty_db, _inspect)["tables"] == TABLES


def test_prepare_without_migrating_refuses_an_old_schema(empty_db: str) -> None:
    with pytest.raises(RuntimeError, match="spoton db upgrade"):
        run(empty_db, lambda r: r.prepare(migrate_schema=False))


def test_concurrent_upgrades_do_not_collide(empty_db: str) -> None:
    async def together(_repo: Any) -> None:
        repos = [build_history_repository(Settings(database_url=empty_db)) for _ in range(3)]
        try:
            await asyncio.gather(*(r.prepare() for r in repos))
        finally:
            for r in repos:
                await r.dispose()

    run(empty_db, together)
    assert run(empty_db, _inspect)["tables"] == TABLES


def test_timescale_detection_and_plain_fallback() -> None:
    with fresh_pg_database() as name:
        url = pg_url(name)

        async def detect(repo: Any) -> tuple[Any, Any, Any]:
            async with repo.engine.connect() as conn:
                ts = await detect_extension(conn, "timescaledb")
                plpgsql = await detect_extension(conn, "plpgsql")
                ghost = await detect_extension(conn, "no_such_extension_here")
            return ts, plpgsql, ghost

        ts, plpgsql, ghost = run(url, detect)
        # detection reads the server's catalogue: an installed extension is found, a missing one is not
        assert plpgsql.available and plpgsql.installed_version
        assert not ghost.available and ghost.installed_version is None
        status = run(url, lambda r: apply_timescale(r.engine, 90, 7))
        if ts.available:
            pytest.skip("this server has TimescaleDB: the fallback branch does not apply")
        assert not status.applied and "not available" in status.detail
        run(url, lambda r: r.prepare())

        async def hypertables(repo: Any) -> Any:
            async with repo.engine.connect() as conn:
                return (await conn.execute(text("SELECT to_regclass('tracking_counts_1m')"))).scalar()

        assert run(url, hypertables) is None  # no aggregate view without the extension


def test_timescale_statements_are_policy_driven() -> None:
    sql = setup_statements(retention_days=30, compress_after_days=3)
    assert sql[0] == "CREATE EXTENSION IF NOT EXISTS timescaledb"
    assert any("create_hypertable('tracking_events'" in s for s in sql)
    assert any("add_retention_policy('tracking_events', INTERVAL '30 days'" in s for s in sql)
    assert any("add_compression_policy('tracking_events', INTERVAL '3 days'" in s for s in sql)
    assert any("tracking_counts_1m" in s and "timescaledb.continuous" in s for s in sql)


def test_sqlite_fallback_reports_plain_tables(tmp_path: Path) -> None:
    status = run(sqlite_url(tmp_path / "x.db"), lambda r: apply_timescale(r.engine, 90, 7))
    assert not status.applied and "sqlite" in status.detail


def test_database_urls_are_checked() -> None:
    assert normalise_url("postgresql://u:p@h/db").drivername == "postgresql+asyncpg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        normalise_url("mysql://h/db")
    with pytest.raises(ValueError, match="not a database URL"):
        normalise_url("::nonsense::")
    repo = build_history_repository(Settings(database_url="postgresql://u:secret@h/db"))
    assert "secret" not in repo.display_url


def test_cli_db_upgrade_current_downgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("SPOTON_DATABASE_URL", sqlite_url(tmp_path / "cli.db"))
    assert cli_main(["db", "upgrade"]) == 0
    assert cli_main(["db", "current"]) == 0
    assert f"revision {migrate.head_revision()}" in capsys.readouterr().out
    assert cli_main(["db", "downgrade", "base"]) == 0
    assert "revision none" in capsys.readouterr().out
