"""The history schema (SQLAlchemy Core). Migrations (``migrations/versions``) create exactly this.

``time`` is the indexed time axis (a hypertable's dimension under TimescaleDB); ``ts`` is the same instant
as seconds since the epoch, which every analytics query does its arithmetic on (bucketing, durations) the
same way in PostgreSQL and SQLite. Ids are ``text`` (no length limit to hit; TimescaleDB's best practice
for segment-by columns). Each event table declares its own index on ``time``, so TimescaleDB is told not to add
its default one (which Alembic would then see as drift).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Dialect,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import DateTime, TypeDecorator

metadata = MetaData()


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out; SQLite (no time zones) stores them as naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


tracking_events = Table(
    "tracking_events",
    metadata,
    Column("time", UtcDateTime(), nullable=False),
    Column("ts", Double(), nullable=False),
    Column("task_id", Text(), nullable=False),
    Column("environment_id", Text(), nullable=False),
    Column("camera_id", Text(), nullable=False),
    Column("frame_index", Integer(), nullable=False),
    Column("track_id", Integer(), nullable=False),
    Column("global_id", Integer(), nullable=False),
    Column("x1", Double(), nullable=False),
    Column("y1", Double(), nullable=False),
    Column("x2", Double(), nullable=False),
    Column("y2", Double(), nullable=False),
    Column("confidence", Double(), nullable=False),
    Column("map_x", Double(), nullable=True),
    Column("map_y", Double(), nullable=True),
    Column("video_ts_s", Double(), nullable=False),
    Column("sample_s", Double(), nullable=False),
    UniqueConstraint("task_id", "camera_id", "frame_index", "track_id", "time", name="uq_tracking_events_key"),
    Index("ix_tracking_events_time", "time"),
    Index("ix_tracking_events_env_time", "environment_id", "time"),
    Index("ix_tracking_events_gid_time", "task_id", "global_id", "time"),
    Index("ix_tracking_events_camera_time", "camera_id", "time"),
)

identity_events = Table(
    "identity_events",
    metadata,
    Column("time", UtcDateTime(), nullable=False),
    Column("ts", Double(), nullable=False),
    Column("task_id", Text(), nullable=False),
    Column("environment_id", Text(), nullable=False),
    Column("seq", Integer(), nullable=False),
    Column("event", String(16), nullable=False),
    Column("global_id", Integer(), nullable=False),
    Column("other_id", Integer(), nullable=True),
    Column("camera_id", Text(), nullable=True),
    Column("track_id", Integer(), nullable=True),
    Column("score", Double(), nullable=True),
    Column("video_ts_s", Double(), nullable=False),
    UniqueConstraint("task_id", "seq", "time", name="uq_identity_events_key"),
    Index("ix_identity_events_time", "time"),
    Index("ix_identity_events_env_time", "environment_id", "time"),
    Index("ix_identity_events_gid_time", "task_id", "global_id", "time"),
    Index("ix_identity_events_merges", "task_id", "event", "other_id"),
)

task_runs = Table(
    "task_runs",
    metadata,
    Column("task_id", Text(), primary_key=True),
    Column("environment_id", Text(), nullable=False),
    Column("camera_ids", JSON(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("details", Text(), nullable=False, server_default=""),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("ended_at", UtcDateTime(), nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("updated_ts", Double(), nullable=False),
    Column("frames_processed", Integer(), nullable=False),
    Column("frames_skipped", Integer(), nullable=False),
    Column("epoch", Integer(), nullable=False, server_default="0"),
    Index("ix_task_runs_env_created", "environment_id", "created_at"),
)
