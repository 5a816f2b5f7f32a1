"""Schema migrations on empty PostgreSQL and SQLite databases; TimescaleDB detection and the plain fallback."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Text, inspect, text

from app.cli import main as cli_main
from app.core.config import Settings
from app.stores.history import migrate
from app.stores.history.repository import build_history_repository, normalise_url
from app.stores.history.tables import identity_events, metadata, tracking_events
from app.stores.history.timescale import TimescaleState, apply_timescale, detect_extension, setup_statements
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


def _has_timescale(url: str) -> bool:
    if not url.startswith("postgresql"):
        return False

    async def go(repo: Any) -> bool:
        async with repo.engine.connect() as conn:
            return (await detect_extension(conn)).available

    return bool(run(url, go))


async def _apply_timescale(repo: Any) -> Any:
    async with migrate.schema_lock(repo.engine) as conn:
        return await apply_timescale(conn, 90, 7)


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
    assert described.startswith(f"revision {migrate.head_revision()}")
    assert ("timescaledb hypertables" if _has_timescale(empty_db) else "plain tables") in described

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
        status = run(url, _apply_timescale)
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
    assert any("timescaledb.materialized_only = false" in s for s in sql)  # real-time: fresh buckets included
    # what is in place already is not issued again (the lock serialises; this keeps re-runs quiet)
    again = setup_statements(30, 3, TimescaleState(compression_enabled=True, aggregate_exists=True))
    assert not any("timescaledb.compress," in s or "CREATE MATERIALIZED VIEW" in s for s in again)


def test_compression_segments_and_orders_by_the_unique_key() -> None:
    """ON CONFLICT into a compressed chunk decompresses only matching segments when the unique key's columns
    are segment-by or order-by columns."""
    sql = next(s for s in setup_statements(30, 3) if "timescaledb.compress," in s)
    segment = re.search(r"compress_segmentby = '([^']*)'", sql)
    order = re.search(r"compress_orderby = '([^']*)'", sql)
    assert segment and order
    covered = {c.strip().split()[0] for c in (segment.group(1) + "," + order.group(1)).split(",")}
    key = next(c for c in tracking_events.constraints if getattr(c, "name", "") == "uq_tracking_events_key")
    assert {col.name for col in key.columns} <= covered  # type: ignore[attr-defined]
    for name in ("task_id", "environment_id", "camera_id"):
        assert isinstance(tracking_events.c[name].type, Text), name


def test_hypertables_get_no_default_index_and_declare_their_own() -> None:
    """create_hypertable's default time index is not in tables.py, so Alembic would report it as drift."""
    sql = setup_statements(30, 3)
    hyper = [s for s in sql if "create_hypertable(" in s]
    assert len(hyper) == 2 and all("create_default_indexes => FALSE" in s for s in hyper)
    for table in (tracking_events, identity_events):
        assert any(ix.columns.keys()[0] == "time" for ix in table.indexes), table.name


def test_a_held_schema_lock_makes_a_second_start_wait() -> None:
    """The lock covers the whole start-up schema work (migrations and TimescaleDB), not one transaction."""
    with fresh_pg_database() as name:
        url = pg_url(name)

        async def scenario(repo: Any) -> tuple[bool, str]:
            async with migrate.schema_lock(repo.engine):
                other = build_history_repository(Settings(database_url=url))
                try:
                    start = asyncio.create_task(other.prepare())
                    await asyncio.sleep(1.0)
                    waited = not start.done()
                finally:
                    pass
            try:
                described = await asyncio.wait_for(start, 30)
            finally:
                await other.dispose()
            return waited, described

        waited, described = run(url, scenario)
        assert waited, "a start went ahead while another held the schema lock"
        assert described.startswith(f"revision {migrate.head_revision()}")


def test_concurrent_starts_issue_timescale_statements_one_server_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three servers start at once on a database whose server 'has' TimescaleDB. The statements are recorded
    instead of executed (the extension is not installable here), with add_*_policy(if_not_exists) simulated as
    the check-then-insert it is — racy on its own. Every statement must be issued under the lock, one server's
    statements must not interleave with another's, and each policy must end up created exactly once."""
    from app.stores.history import timescale

    issued: list[tuple[int, bool, str]] = []
    jobs: list[str] = []
    state = {"compression": False, "aggregate": False}

    async def available(conn: Any, name: str = "timescaledb") -> timescale.ExtensionInfo:
        return timescale.ExtensionInfo(name, True, None)

    async def read_state(conn: Any) -> timescale.TimescaleState:
        return timescale.TimescaleState(state["compression"], state["aggregate"])

    async def record(conn: Any, statement: str) -> None:
        pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
        held = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND ((classid::bigint << 32) | objid::bigint) = :key"
                ),
                {"key": migrate.LOCK_KEY},
            )
        ).scalar()
        issued.append((int(pid), bool(held), statement))
        policy = re.match(r"SELECT (add_\w+_policy)\('(\w+)'", statement)
        if policy:
            key = f"{policy.group(1)}:{policy.group(2)}"
            exists = key in jobs
            await asyncio.sleep(0.02)  # if_not_exists checks, then inserts: another caller can slip in between
            if not exists:
                jobs.append(key)
        state["compression"] |= "timescaledb.compress," in statement
        state["aggregate"] |= "CREATE MATERIALIZED VIEW" in statement

    monkeypatch.setattr(timescale, "detect_extension", available)
    monkeypatch.setattr(timescale, "read_state", read_state)
    monkeypatch.setattr(timescale, "execute_statement", record)
    with fresh_pg_database() as name:
        url = pg_url(name)

        async def together(_repo: Any) -> list[str]:
            repos = [build_history_repository(Settings(database_url=url)) for _ in range(3)]
            try:
                return list(await asyncio.gather(*(r.prepare() for r in repos)))
            finally:
                for r in repos:
                    await r.dispose()

        described = run(url, together)
    assert all("timescaledb hypertables" in d for d in described), described
    assert issued and all(held for _pid, held, _s in issued), "a TimescaleDB statement ran outside the lock"
    runs = [pid for i, (pid, _h, _s) in enumerate(issued) if i == 0 or issued[i - 1][0] != pid]
    assert len(runs) == len(set(runs)) == 3, "servers' statements interleaved"
    assert sorted(jobs) == sorted(set(jobs)) and len(jobs) == 5  # 1 compression, 3 retention, 1 aggregate
    assert sum("CREATE MATERIALIZED VIEW" in s for _p, _h, s in issued) == 1
    assert sum("timescaledb.compress," in s for _p, _h, s in issued) == 1


def test_db_upgrade_to_a_named_revision_takes_the_one_upgrade_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """`spoton db upgrade 0002` (the head, by name) goes where plain `spoton db upgrade` goes; an older revision
    says TimescaleDB is not applied there."""
    monkeypatch.setenv("SPOTON_DATABASE_URL", sqlite_url(tmp_path / "named.db"))
    assert cli_main(["db", "upgrade", "0001"]) == 0
    out = capsys.readouterr().out
    assert "revision 0001; not the latest" in out
    assert cli_main(["db", "upgrade", migrate.head_revision()]) == 0
    out = capsys.readouterr().out
    assert f"revision {migrate.head_revision()}; plain tables" in out


def test_sqlite_fallback_reports_plain_tables(tmp_path: Path) -> None:
    status = run(sqlite_url(tmp_path / "x.db"), _apply_timescale)
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
