"""History tables: tracking events, identity events, task runs (plain tables with their indexes).

Revision ID: 0001
Revises:
Create Date: 2026-01-01

TimescaleDB (hypertables, compression, retention, the per-minute aggregate) is applied after the migrations
when the extension is available (``app/stores/history/timescale.py``), because its policies depend on settings.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tracking_events",
        sa.Column("time", TS, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("environment_id", sa.String(200), nullable=False),
        sa.Column("camera_id", sa.String(100), nullable=False),
        sa.Column("frame_index", sa.Integer(), nullable=False),
        sa.Column("track_id", sa.Integer(), nullable=False),
        sa.Column("global_id", sa.Integer(), nullable=False),
        sa.Column("x1", sa.Double(), nullable=False),
        sa.Column("y1", sa.Double(), nullable=False),
        sa.Column("x2", sa.Double(), nullable=False),
        sa.Column("y2", sa.Double(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=False),
        sa.Column("map_x", sa.Double(), nullable=True),
        sa.Column("map_y", sa.Double(), nullable=True),
        sa.Column("video_ts_s", sa.Double(), nullable=False),
        sa.Column("sample_s", sa.Double(), nullable=False),
        sa.UniqueConstraint(
            "task_id", "camera_id", "frame_index", "track_id", "time", name="uq_tracking_events_key"
        ),
    )
    op.create_index("ix_tracking_events_time", "tracking_events", ["time"])
    op.create_index("ix_tracking_events_env_time", "tracking_events", ["environment_id", "time"])
    op.create_index("ix_tracking_events_gid_time", "tracking_events", ["task_id", "global_id", "time"])
    op.create_index("ix_tracking_events_camera_time", "tracking_events", ["camera_id", "time"])

    op.create_table(
        "identity_events",
        sa.Column("time", TS, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("environment_id", sa.String(200), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("global_id", sa.Integer(), nullable=False),
        sa.Column("other_id", sa.Integer(), nullable=True),
        sa.Column("camera_id", sa.String(100), nullable=True),
        sa.Column("track_id", sa.Integer(), nullable=True),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("video_ts_s", sa.Double(), nullable=False),
        sa.UniqueConstraint("task_id", "seq", "time", name="uq_identity_events_key"),
    )
    op.create_index("ix_identity_events_env_time", "identity_events", ["environment_id", "time"])
    op.create_index("ix_identity_events_gid_time", "identity_events", ["task_id", "global_id", "time"])
    op.create_index("ix_identity_events_merges", "identity_events", ["task_id", "event", "other_id"])

    op.create_table(
        "task_runs",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("environment_id", sa.String(200), nullable=False),
        sa.Column("camera_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("details", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("ended_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_ts", sa.Double(), nullable=False),
        sa.Column("frames_processed", sa.Integer(), nullable=False),
        sa.Column("frames_skipped", sa.Integer(), nullable=False),
    )
    op.create_index("ix_task_runs_env_created", "task_runs", ["environment_id", "created_at"])


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # TimescaleDB's per-minute aggregate depends on the table
        op.execute("DROP MATERIALIZED VIEW IF EXISTS tracking_counts_1m CASCADE")
    op.drop_table("task_runs")
    op.drop_table("identity_events")
    op.drop_table("tracking_events")
