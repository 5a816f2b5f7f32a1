"""TimescaleDB: detected at start-up, and applied when the server has the extension; else plain tables.

What is applied (idempotent; each statement on its own, autocommit, because a continuous aggregate cannot
be created inside a transaction block):
- ``tracking_events`` and ``identity_events`` become hypertables on ``time`` (existing rows migrated);
- ``tracking_events`` is compressed after ``history_compress_after_days`` (segmented by environment and
  camera), and both tables drop chunks older than ``history_retention_days``;
- ``tracking_counts_1m``: a continuous aggregate of detections per minute, environment and camera, refreshed
  every minute. (Distinct people cannot be a continuous aggregate: TimescaleDB does not allow DISTINCT in
  one; the analytics API counts them from the events.)

The extension is not installable on the development machine, so this branch is exercised only as far as
detection; see docs/stores.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)
EXTENSION = "timescaledb"


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


def setup_statements(retention_days: int, compress_after_days: int) -> list[str]:
    """The TimescaleDB DDL, in order. Integers only are interpolated (validated settings)."""
    retention, compress = f"INTERVAL '{int(retention_days)} days'", f"INTERVAL '{int(compress_after_days)} days'"
    return [
        f"CREATE EXTENSION IF NOT EXISTS {EXTENSION}",
        "SELECT create_hypertable('tracking_events', 'time', if_not_exists => TRUE, migrate_data => TRUE)",
        "SELECT create_hypertable('identity_events', 'time', if_not_exists => TRUE, migrate_data => TRUE)",
        "ALTER TABLE tracking_events SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'environment_id, camera_id', timescaledb.compress_orderby = 'time DESC')",
        f"SELECT add_compression_policy('tracking_events', {compress}, if_not_exists => TRUE)",
        f"SELECT add_retention_policy('tracking_events', {retention}, if_not_exists => TRUE)",
        f"SELECT add_retention_policy('identity_events', {retention}, if_not_exists => TRUE)",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS tracking_counts_1m WITH (timescaledb.continuous) AS "
        "SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, environment_id, camera_id, "
        "count(*) AS detections, avg(confidence) AS mean_confidence "
        "FROM tracking_events GROUP BY bucket, environment_id, camera_id WITH NO DATA",
        "SELECT add_continuous_aggregate_policy('tracking_counts_1m', start_offset => INTERVAL '1 hour', "
        "end_offset => INTERVAL '1 minute', schedule_interval => INTERVAL '1 minute', if_not_exists => TRUE)",
        f"SELECT add_retention_policy('tracking_counts_1m', {retention}, if_not_exists => TRUE)",
    ]


async def apply_timescale(engine: AsyncEngine, retention_days: int, compress_after_days: int) -> TimescaleStatus:
    """Hypertables, policies and the per-minute aggregate when the extension can be had; else nothing
    (plain tables with their indexes, from the migrations). Never raises for a missing extension."""
    if engine.dialect.name != "postgresql":
        return TimescaleStatus(False, f"plain tables ({engine.dialect.name})")
    async with engine.connect() as conn:
        info = await detect_extension(conn)
    if not info.available:
        return TimescaleStatus(False, "plain tables (timescaledb extension not available on this server)")
    statement = ""
    try:
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for statement in setup_statements(retention_days, compress_after_days):
                await auto.execute(text(statement))
    except Exception as exc:  # e.g. CREATE EXTENSION needs a superuser: stay on plain tables, say why
        log.warning("TimescaleDB available but not applied (%s): %s", statement[:80], exc)
        return TimescaleStatus(False, f"plain tables (timescaledb not applied: {type(exc).__name__}: {exc})")
    return TimescaleStatus(True, "timescaledb hypertables, compression, retention, tracking_counts_1m")
