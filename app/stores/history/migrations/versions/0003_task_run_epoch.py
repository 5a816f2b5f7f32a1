"""Task runs carry the fencing epoch of the worker that last took them (scale-out, docs/scale-out.md).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03

``task_runs.epoch`` (0 for runs of the single-process server): a write of tracking or identity events of a
lower epoch than the run's is refused, so a worker that lost its lease cannot add rows after another worker
resumed the task. ``task_runs`` is a plain table (not a hypertable), so this is a plain column addition.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("task_runs") as batch:
        batch.add_column(sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("task_runs") as batch:
        batch.drop_column("epoch")
