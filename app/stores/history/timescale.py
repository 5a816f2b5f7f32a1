"""TimescaleDB: detected at start-up, and applied when the server has the extension; else plain tables.

What is applied, on the connection that holds the schema lock (`migrate.schema_lock`), each statement on its
own in autocommit (a continuous aggregate cannot be created inside a transaction block):
- ``tracking_events`` and ``identity_events`` become hypertables on ``time`` (existing rows migrated), without
  TimescaleDB's default indexes: the time indexes are declared in ``tables.py``, so Alembic's view of the
  schema and the database agree;
- ``tracking_events`` is compressed after ``history_compress_after_days``, segmented by ``task_id, camera_id``
  and ordered by ``frame_index, track_id, time`` — the columns of its unique key, so an idempotent
  ``ON CONFLICT DO NOTHING`` write into a compressed chunk decompresses only the batches of one task and camera
  (environment filters go through the aggregate below, or the time range);
- both tables drop chunks older than ``history_retention_days``;
- ``tracking_counts_1m``: a real-time continuous aggregate per minute, environment, camera, task and global id
  (detections, person-seconds, mean confidence), refreshed every minute; a person's row per minute is what
  long-range occupancy reads instead of the raw events. Created over existing data, it is refreshed in full once.

Policies are added only under the lock, and ``add_*_policy(if_not_exists)`` is not race-safe by itself: the lock
is what makes two servers starting together add each policy once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)
EXTENSION = "timescaledb"
AGGREGATE = "tracking_counts_1m"
AGGREGATE_BUCKET_S = 60.0
COMPRESS_SEGMENTBY = "task_id, camera_id"
COMPRESS_ORDERBY = "frame_index DESC, track_id, time DESC"


@dataclass(slots=True, frozen=True)
class ExtensionInfo:
    name: str
    available: bool
    """The server has the extension's files (``pg_available_extensions``)."""
    installed_version: str | None
    """Installed in this database (``CREATE EXTENSION`` done)."""


@dataclass(slots=True, frozen=True)
class TimescaleStatus:
    applied: bool
    detail: str


@dataclass(slots=True, frozen=True)
class TimescaleState:
    """What is already in place (read under the lock before deciding what to issue)."""

    compression_enabled: bool = False
    aggregate_exists: bool = False


async def detect_extension(conn: AsyncConnection, name: str = EXTENSION) -> ExtensionInfo:
    """Whether a PostgreSQL extension is available on the server and installed in this database."""
    if conn.dialect.name != "postgresql":
        return ExtensionInfo(name, False, None)
    row = (
        await conn.execute(
            text("SELECT installed_version FROM pg_available_extensions WHERE name = :name"), {"name": name}
        )
    ).first()
    if row is None:
        return ExtensionInfo(name, False, None)
    return ExtensionInfo(name, True, row[0])


async def read_state(conn: AsyncConnection) -> TimescaleState:
    """Compression and aggregate state of an installed extension (a fresh state when it is not installed)."""
    if (await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = :n"), {"n": EXTENSION})).first() is None:
        return TimescaleState()
    compression = (
        await conn.execute(
            text(
                "SELECT compression_enabled FROM timescaledb_information.hypertables "
                "WHERE hypertable_name = 'tracking_events'"
            )
        )
    ).scalar()
    aggregate = (await conn.execute(text(f"SELECT to_regclass('{AGGREGATE}') IS NOT NULL"))).scalar()
    return TimescaleState(bool(compression), bool(aggregate))


def setup_statements(
    retention_days: int, compress_after_days: int, state: TimescaleState | None = None
) -> list[str]:
    """The TimescaleDB DDL still to issue, in order. Integers only are interpolated (validated settings)."""
    state = state or TimescaleState()
    retention, compress = f"INTERVAL '{int(retention_days)} days'", f"INTERVAL '{int(compress_after_days)} days'"
    sql = [
        f"CREATE EXTENSION IF NOT EXISTS {EXTENSION}",
        "SELECT create_hypertable('tracking_events', 'time', if_not_exists => TRUE, migrate_data => TRUE, "
        "create_default_indexes => FALSE)",
        "SELECT create_hypertable('identity_events', 'time', if_not_exists => TRUE, migrate_data => TRUE, "
        "create_default_indexes => FALSE)",
    ]
    if not state.compression_enabled:
        sql.append(
            "ALTER TABLE tracking_events SET (timescaledb.compress, "
            f"timescaledb.compress_segmentby = '{COMPRESS_SEGMENTBY}', "
            f"timescaledb.compress_orderby = '{COMPRESS_ORDERBY}')"
        )
    sql += [
        f"SELECT add_compression_policy('tracking_events', {compress}, if_not_exists => TRUE)",
        f"SELECT add_retention_policy('tracking_events', {retention}, if_not_exists => TRUE)",
        f"SELECT add_retention_policy('identity_events', {retention}, if_not_exists => TRUE)",
    ]
    if not state.aggregate_exists:
        sql += [
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {AGGREGATE} "
            "WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS "
            "SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, environment_id, camera_id, task_id, global_id, "
            "count(*) AS detections, sum(sample_s) AS person_seconds, avg(confidence) AS mean_confidence "
            "FROM tracking_events GROUP BY bucket, environment_id, camera_id, task_id, global_id WITH NO DATA",
            f"CALL refresh_continuous_aggregate('{AGGREGATE}', NULL, NULL)",
        ]
    sql += [
        f"SELECT add_continuous_aggregate_policy('{AGGREGATE}', start_offset => INTERVAL '1 hour', "
        "end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE)",
        f"SELECT add_retention_policy('{AGGREGATE}', {retention}, if_not_exists => TRUE)",
    ]
    return sql


async def execute_statement(conn: AsyncConnection, statement: str) -> None:
    """Issue one DDL statement (the seam the lock-scope test records through)."""
    await conn.execute(text(statement))


async def apply_timescale(conn: AsyncConnection, retention_days: int, compress_after_days: int) -> TimescaleStatus:
    """Hypertables, policies and the per-minute aggregate when the extension can be had; else nothing (plain
    tables with their indexes, from the migrations). ``conn`` must hold the schema lock
    (`migrate.schema_lock`). Never raises for a missing extension."""
    if conn.dialect.name != "postgresql":
        return TimescaleStatus(False, f"plain tables ({conn.dialect.name})")
    info = await detect_extension(conn)
    if not info.available:
        await conn.commit()
        return TimescaleStatus(False, "plain tables (timescaledb extension not available on this server)")
    statement = ""
    try:
        state = await read_state(conn)
        await conn.commit()
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        for statement in setup_statements(retention_days, compress_after_days, state):
            await execute_statement(conn, statement)
    except Exception as exc:  # e.g. CREATE EXTENSION needs a superuser: stay on plain tables, say why
        log.warning("TimescaleDB available but not applied (%s): %s", statement[:80], exc)
        return TimescaleStatus(False, f"plain tables (timescaledb not applied: {type(exc).__name__}: {exc})")
    return TimescaleStatus(True, f"timescaledb hypertables, compression, retention, {AGGREGATE}")


async def describe_timescale(conn: AsyncConnection) -> TimescaleStatus:
    """Read-only: whether this database already runs on hypertables (for a start that does not migrate)."""
    if conn.dialect.name != "postgresql":
        return TimescaleStatus(False, f"plain tables ({conn.dialect.name})")
    try:
        if (await conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = :n"), {"n": EXTENSION})).first():
            n = (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM timescaledb_information.hypertables "
                        "WHERE hypertable_name IN ('tracking_events', 'identity_events')"
                    )
                )
            ).scalar()
            if n == 2:
                return TimescaleStatus(True, f"timescaledb hypertables, compression, retention, {AGGREGATE}")
    finally:
        await conn.commit()
    return TimescaleStatus(False, "plain tables")


async def aggregate_ready(conn: AsyncConnection) -> bool:
    """Whether the per-minute aggregate exists with the columns long-range occupancy reads."""
    if conn.dialect.name != "postgresql":
        return False
    row = (
        await conn.execute(
            text(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = :t "
                "AND column_name IN ('bucket', 'environment_id', 'camera_id', 'task_id', 'global_id', "
                "'person_seconds')"
            ),
            {"t": AGGREGATE},
        )
    ).scalar()
    return row == 6
