"""A task's state as JSON, so that a process that does not run the task can report its status."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from app.services.processing_task import TaskState, TaskStats, TaskStatus

_STATS_FIELDS = {f.name for f in dataclasses.fields(TaskStats)}


def snapshot_of(task: TaskState) -> dict[str, Any]:
    """JSON-able copy of ``task`` (``extra`` is left out: it is process-local)."""
    return {
        "task_id": task.task_id,
        "environment_id": task.environment_id,
        "camera_ids": list(task.camera_ids),
        "status": task.status.value,
        "progress": task.progress,
        "current_step": task.current_step,
        "details": task.details,
        "created_at": task.created_at.isoformat(),
        "updated_at": task.updated_at.isoformat(),
        "stats": dataclasses.asdict(task.stats),
        "worker_id": task.worker_id,
        "epoch": task.epoch,
        "resumed_from_frame": task.resumed_from_frame,
        "queue_position": task.queue_position,
    }


def task_from_snapshot(data: dict[str, Any]) -> TaskState:
    """The ``TaskState`` a snapshot describes; ValueError when it is not one."""
    try:
        stats = {k: v for k, v in dict(data.get("stats") or {}).items() if k in _STATS_FIELDS}
        return TaskState(
            task_id=str(data["task_id"]),
            environment_id=str(data["environment_id"]),
            camera_ids=[str(c) for c in data["camera_ids"]],
            status=TaskStatus(data["status"]),
            progress=float(data["progress"]),
            current_step=str(data["current_step"]),
            details=str(data["details"]),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            stats=TaskStats(**stats),
            worker_id=None if data.get("worker_id") is None else str(data["worker_id"]),
            epoch=int(data.get("epoch") or 0),
            resumed_from_frame=None if data.get("resumed_from_frame") is None else int(data["resumed_from_frame"]),
            queue_position=None if data.get("queue_position") is None else int(data["queue_position"]),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a task snapshot: {exc}") from exc
