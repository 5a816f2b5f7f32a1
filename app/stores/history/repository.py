"""Where the history is written: PostgreSQL (``SPOTON_DATABASE_URL``) or an embedded SQLite file (default).

Both speak SQLAlchemy Core over an async driver (asyncpg, aiosqlite) and differ only in the dialect's insert
construct, connection set-up and TimescaleDB. Writes are idempotent: tracking and identity events are
inserted with ON CONFLICT DO NOTHING on their deterministic keys, and a task run is upserted only by a newer
state, so replaying a batch (after an outage, or a crash between insert and spool delete) changes nothing.

Fencing (scale-out): records carry their run's epoch; a write reads the runs' epochs ``FOR SHARE`` in its
transaction and drops records of a lower epoch, and ``fence_task`` (a worker taking a task over) raises the
run's epoch and deletes what the previous run wrote after the checkpoint, under the row lock: no stale row
lands after a takeover, and none beyond the checkpoint survives it.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

from sqlalchemy import Table, delete, event, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

from app.core.config import Settings
from app.stores.history import migrate
from app.stores.history.analytics import HistoryAnalytics
from app.stores.history.records import (
    IdentityEventRecord,
    Record,
    TaskRunRecord,
    TrackingEventRecord,
    epoch_to_datetime,
)
from app.stores.history.tables import identity_events, task_runs, tracking_events
from app.stores.history.timescale import aggregate_ready, apply_timescale, describe_timescale

log = logging.getLogger(__name__)


class StaleEpochError(RuntimeError):
    """Another worker took the task with a higher epoch."""


class HistoryRepository(Protocol):
    """Stores history records and answers analytics over them."""

    @property
    def backend(self) -> str:
        """``postgresql`` or ``sqlite``."""
        ...

    display_url: str
    """The database URL without its password."""
    analytics: HistoryAnalytics

    async def prepare(self, migrate_schema: bool = True) -> str:
        """Bring the schema to head (and TimescaleDB when available); a one-line description of it."""
        ...

    async def upgrade(self, revision: str = "head") -> str:
        """Migrate to ``revision`` (TimescaleDB too when it is the latest), under the schema lock."""
        ...

    async def write(self, records: Sequence[Record]) -> None:
        """All records in one transaction; writing the same records again stores nothing new."""
        ...

    async def fence_task(self, run: TaskRunRecord, after_video_ts_s: float | None) -> None:
        """Scale-out takeover: raise the run's epoch, drop its events after the checkpoint (``StaleEpochError``
        when a higher epoch holds it)."""
        ...

    async def ping(self) -> None: ...

    async def dispose(self) -> None: ...


def database_url(settings: Settings) -> str:
    """``SPOTON_DATABASE_URL``, or the embedded SQLite file ``<data_dir>/spoton.db``."""
    if settings.database_url:
        return settings.database_url
    return f"sqlite+aiosqlite:///{settings.data_dir / 'spoton.db'}"


def normalise_url(raw: str) -> URL:
    """The URL with its async driver (``postgresql://`` → asyncpg, ``sqlite://`` → aiosqlite)."""
    try:
        url = make_url(raw)
    except Exception as exc:
        raise ValueError(f"SPOTON_DATABASE_URL is not a database URL: {exc}") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        if url.get_driver_name() not in ("asyncpg", "psycopg2", "psycopg", ""):
            raise ValueError(f"unsupported PostgreSQL driver '{url.get_driver_name()}': use postgresql+asyncpg://")
        return url.set(drivername="postgresql+asyncpg")
    if backend == "sqlite":
        return url.set(drivername="sqlite+aiosqlite")
    raise ValueError(f"unsupported database '{backend}': use postgresql+asyncpg://… or sqlite+aiosqlite:///…")


class SqlHistoryRepository:
    """The shared SQLAlchemy implementation; subclasses supply the dialect's pieces."""

    backend: ClassVar[str]

    def __init__(self, engine: AsyncEngine, settings: Settings) -> None:
        self.fenced = 0
        """Records refused because a newer run (higher epoch) of their task took over."""
        self.engine = engine
        self.settings = settings
        self.display_url = engine.url.render_as_string(hide_password=True)
        self.analytics = HistoryAnalytics(engine)

    async def prepare(self, migrate_schema: bool = True) -> str:
        """Bring the schema to head (with TimescaleDB when available), or — without ``migrate_schema`` — check
        it is at head and describe it without changing anything."""
        if migrate_schema:
            return await self.upgrade("head")
        revision = await migrate.current_revision(self.engine)
        if revision != migrate.head_revision():
            raise RuntimeError(
                f"history schema is at revision {revision}, expected {migrate.head_revision()}: run `spoton db upgrade`"
            )
        async with self.engine.connect() as conn:
            return f"revision {revision}; {await self._describe(conn)}"

    async def upgrade(self, revision: str = "head") -> str:
        """The one upgrade path (server start and ``spoton db upgrade [REV]``): Alembic to ``revision`` and, when
        that is the latest revision, TimescaleDB — all under one schema lock."""
        async with migrate.schema_lock(self.engine) as conn:
            await migrate.upgrade_on(conn, revision)
            current = await migrate.current_revision_on(conn)
            if current != migrate.head_revision():
                return f"revision {current}; not the latest ({migrate.head_revision()}): TimescaleDB not applied"
            return f"revision {current}; {await self._extras(conn)}"

    async def _extras(self, conn: AsyncConnection) -> str:
        """Schema additions beyond the migrations, on the locked connection; a one-line description."""
        return "plain tables"

    async def _describe(self, conn: AsyncConnection) -> str:
        return "plain tables"

    def _insert(self, table: Table) -> Any:
        """The dialect's INSERT (it has ON CONFLICT)."""
        raise NotImplementedError

    async def write(self, records: Sequence[Record]) -> None:
        async with self.engine.begin() as conn:
            if any(r.epoch for r in records):
                records = await self._drop_fenced(conn, records)
            await self._write_on(conn, records)

    async def _drop_fenced(self, conn: AsyncConnection, records: Sequence[Record]) -> list[Record]:
        ids = sorted({r.task_id for r in records if r.epoch})
        query = select(task_runs.c.task_id, task_runs.c.epoch).where(task_runs.c.task_id.in_(ids))
        current = {row.task_id: row.epoch for row in await conn.execute(query.with_for_update(read=True))}
        kept = [r for r in records if not r.epoch or r.epoch >= current.get(r.task_id, 0)]
        if len(kept) < len(records):
            self.fenced += len(records) - len(kept)
            log.warning("history: %d records of a superseded run (lower epoch) refused", len(records) - len(kept))
        return kept

    async def fence_task(self, run: TaskRunRecord, after_video_ts_s: float | None) -> None:
        """A worker takes the task over with ``run.epoch``: raise the run's epoch (refusing a stale taker),
        and delete the events recorded after ``after_video_ts_s`` (all of them when None: it starts over)."""
        async with self.engine.begin() as conn:
            query = select(task_runs.c.epoch).where(task_runs.c.task_id == run.task_id).with_for_update()
            row = (await conn.execute(query)).first()
            if row is not None and row.epoch > run.epoch:
                raise StaleEpochError(f"task {run.task_id} is at epoch {row.epoch}, not {run.epoch}")
            if row is None:
                await conn.execute(self._upsert_run(run))
            else:
                await conn.execute(
                    update(task_runs).where(task_runs.c.task_id == run.task_id).values(epoch=run.epoch)
                )
            for table in (tracking_events, identity_events):
                stmt = delete(table).where(table.c.task_id == run.task_id)
                if after_video_ts_s is not None:
                    stmt = stmt.where(table.c.video_ts_s > after_video_ts_s)
                await conn.execute(stmt)

    async def _write_on(self, conn: AsyncConnection, records: Sequence[Record]) -> None:
        tracking = [_tracking_row(r) for r in records if isinstance(r, TrackingEventRecord)]
        identity = [_identity_row(r) for r in records if isinstance(r, IdentityEventRecord)]
        runs: dict[str, TaskRunRecord] = {}
        for r in records:
            if isinstance(r, TaskRunRecord) and (r.task_id not in runs or runs[r.task_id].updated_ts <= r.updated_ts):
                runs[r.task_id] = r
        if tracking:
            await conn.execute(self._insert(tracking_events).on_conflict_do_nothing(), tracking)
        if identity:
            await conn.execute(self._insert(identity_events).on_conflict_do_nothing(), identity)
        for run in runs.values():
            await conn.execute(self._upsert_run(run))

    def _upsert_run(self, run: TaskRunRecord) -> Insert:
        row = _task_run_row(run)
        stmt = self._insert(task_runs).values(**row)
        excluded = stmt.excluded
        updated = {k: getattr(excluded, k) for k in row if k not in ("task_id", "created_at")}
        return stmt.on_conflict_do_update(
            index_elements=[task_runs.c.task_id],
            set_=updated,
            where=(task_runs.c.epoch < excluded.epoch)
            | ((task_runs.c.epoch == excluded.epoch) & (task_runs.c.updated_ts <= excluded.updated_ts)),
        )

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


class PostgresHistoryRepository(SqlHistoryRepository):
    backend = "postgresql"

    def _insert(self, table: Table) -> Any:
        return postgresql.insert(table)

    @classmethod
    def create(cls, url: URL, settings: Settings) -> PostgresHistoryRepository:
        engine = create_async_engine(
            url,
            pool_pre_ping=True,
            pool_size=4,
            max_overflow=4,
            connect_args={
                "timeout": settings.history_connect_timeout_s,
                "command_timeout": settings.history_write_timeout_s,
                "server_settings": {"application_name": "spoton-history"},
            },
        )
        return cls(engine, settings)

    async def _extras(self, conn: AsyncConnection) -> str:
        s = self.settings
        status = await apply_timescale(conn, s.history_retention_days, s.history_compress_after_days)
        self.analytics.use_aggregate = status.applied and await aggregate_ready(conn)
        return status.detail

    async def _describe(self, conn: AsyncConnection) -> str:
        status = await describe_timescale(conn)
        self.analytics.use_aggregate = status.applied and await aggregate_ready(conn)
        return status.detail


class SqliteHistoryRepository(SqlHistoryRepository):
    backend = "sqlite"

    def __init__(self, engine: AsyncEngine, settings: Settings, path: Path | None = None) -> None:
        super().__init__(engine, settings)
        self.path = path

    async def upgrade(self, revision: str = "head") -> str:
        """SQLite has no advisory lock (and runs DDL outside transactions): servers sharing one file take a
        file lock beside it while they migrate."""
        if self.path is None:
            return await super().upgrade(revision)
        lock = await asyncio.to_thread(_exclusive_lock, self.path.with_name(self.path.name + ".migrate-lock"))
        try:
            return await super().upgrade(revision)
        finally:
            lock.close()

    def _insert(self, table: Table) -> Any:
        return sqlite.insert(table)

    @classmethod
    def create(cls, url: URL, settings: Settings) -> SqliteHistoryRepository:
        path = Path(url.database) if url.database and url.database != ":memory:" else None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": settings.history_write_timeout_s})
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
        return cls(engine, settings, path)


def _exclusive_lock(path: Path) -> IO[str]:
    """An open file holding an exclusive ``flock`` (blocks until it is free; released on close or exit)."""
    fh = path.open("a")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL (analytics read while the recorder writes; several processes may share the file), a busy wait
    instead of 'database is locked', and floor() where this SQLite was built without its math functions."""
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    try:
        cur.execute("SELECT floor(1.5)")
    except Exception:
        import math

        dbapi_connection.create_function("floor", 1, lambda v: None if v is None else math.floor(v))
    cur.close()


def build_history_repository(settings: Settings) -> SqlHistoryRepository:
    url = normalise_url(database_url(settings))
    if url.get_backend_name() == "postgresql":
        return PostgresHistoryRepository.create(url, settings)
    return SqliteHistoryRepository.create(url, settings)


def _tracking_row(r: TrackingEventRecord) -> dict[str, Any]:
    return {
        "time": epoch_to_datetime(r.ts),
        "ts": r.ts,
        "task_id": r.task_id,
        "environment_id": r.environment_id,
        "camera_id": r.camera_id,
        "frame_index": r.frame_index,
        "track_id": r.track_id,
        "global_id": r.global_id,
        "x1": r.x1,
        "y1": r.y1,
        "x2": r.x2,
        "y2": r.y2,
        "confidence": r.confidence,
        "map_x": r.map_x,
        "map_y": r.map_y,
        "video_ts_s": r.video_ts_s,
        "sample_s": r.sample_s,
    }


def _identity_row(r: IdentityEventRecord) -> dict[str, Any]:
    return {
        "time": epoch_to_datetime(r.ts),
        "ts": r.ts,
        "task_id": r.task_id,
        "environment_id": r.environment_id,
        "seq": r.seq,
        "event": r.event,
        "global_id": r.global_id,
        "other_id": r.other_id,
        "camera_id": r.camera_id,
        "track_id": r.track_id,
        "score": r.score,
        "video_ts_s": r.video_ts_s,
    }


def _task_run_row(r: TaskRunRecord) -> dict[str, Any]:
    return {
        "task_id": r.task_id,
        "environment_id": r.environment_id,
        "camera_ids": list(r.camera_ids),
        "status": r.status,
        "details": r.details,
        "created_at": epoch_to_datetime(r.created_ts),
        "started_at": None if r.started_ts is None else epoch_to_datetime(r.started_ts),
        "ended_at": None if r.ended_ts is None else epoch_to_datetime(r.ended_ts),
        "updated_at": epoch_to_datetime(r.updated_ts),
        "updated_ts": r.updated_ts,
        "frames_processed": r.frames_processed,
        "frames_skipped": r.frames_skipped,
        "epoch": r.epoch,
    }
