"""Ids as text, a declared time index on identity_events, and TimescaleDB objects re-made with new settings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

- ``task_id`` / ``environment_id`` / ``camera_id`` become ``text`` (TimescaleDB's best practice for the
  compression segment-by columns; no length limit to hit).
- ``identity_events`` gets ``ix_identity_events_time``, declared in ``tables.py``; the index TimescaleDB's
  ``create_hypertable`` used to add on its own (``identity_events_time_idx``) is dropped, so Alembic's view of the
  schema and the database agree.
- Where TimescaleDB was applied by 0001-era code: the per-minute aggregate is dropped (its columns change; it is
  re-created and refreshed in full after the migration) and compression is switched off after decompressing
  every chunk (column types cannot change under it; it comes back with segment-by ``task_id, camera_id``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID_COLUMNS = {
    "tracking_events": {"task_id": 64, "environment_id": 200, "camera_id": 100},
    "identity_events": {"task_id": 64, "environment_id": 200, "camera_id": 100},
    "task_runs": {"task_id": 64, "environment_id": 200},
}
NULLABLE = {("identity_events", "camera_id")}


def _release_timescale() -> None:
    """Undo what blocks column type changes on a TimescaleDB database (nothing on plain PostgreSQL/SQLite)."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")).first() is None:
        return
    op.execute("DROP MATERIALIZED VIEW IF EXISTS tracking_counts_1m")
    compressed = bind.execute(
        sa.text(
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'tracking_events'"
        )
    ).scalar()
    if compressed:
        op.execute("SELECT remove_compression_policy('tracking_events', if_exists => TRUE)")
        op.execute("SELECT decompress_chunk(c, if_compressed => TRUE) FROM show_chunks('tracking_events') c")
        op.execute("ALTER TABLE tracking_events SET (timescaledb.compress = false)")


def _retype(to_text: bool) -> None:
    for table, columns in ID_COLUMNS.items():
        with op.batch_alter_table(table) as batch:
            for column, length in columns.items():
                new, old = (sa.Text(), sa.String(length)) if to_text else (sa.String(length), sa.Text())
                batch.alter_column(
                    column, type_=new, existing_type=old, existing_nullable=(table, column) in NULLABLE
                )


def upgrade() -> None:
    _release_timescale()
    _retype(to_text=True)
    op.execute("DROP INDEX IF EXISTS identity_events_time_idx")
    op.create_index("ix_identity_events_time", "identity_events", ["time"])


def downgrade() -> None:
    _release_timescale()
    op.drop_index("ix_identity_events_time", table_name="identity_events")
    _retype(to_text=False)
