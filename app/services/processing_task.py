"""The state of one processing task, as the API reports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    QUEUED = "QUEUED"
    INITIALIZING = "INITIALIZING"
    DOWNLOADING = "DOWNLOADING"
    EXTRACTING = "EXTRACTING"
    PROCESSING = "PROCESSING"
    RESUMING = "RESUMING"
    """Scale-out: its worker was lost or handed it back; another worker continues it from a checkpoint."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.STOPPED)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class TaskStats:
    frames_processed: int = 0
    """Global frames that went through the models."""
    frames_skipped: int = 0
    """Global frames dropped to stay real-time."""
    camera_frames: dict[str, int] = field(default_factory=dict)
    fps_total: float = 0.0
    fps_per_camera: dict[str, float] = field(default_factory=dict)
    persons_now: int = 0
    global_ids_total: int = 0
    latency_ms_p50: float | None = None
    """Decode → published to the clients' outboxes."""
    latency_ms_p95: float | None = None
    latency_ms_p99: float | None = None
    send_latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per camera, decode → WebSocket send completed (p50/p95/p99), measured at the send."""
    stage_ms: dict[str, float] = field(default_factory=dict)
    outside_models_share: float | None = None
    """Share of busy pipeline time not spent in the models (detector, embedder)."""
    jpeg_quality: int | None = None
    detector_input: dict[str, int] = field(default_factory=dict)
    """Cameras whose detector input is shrunk (close views) or enlarged (far views; `DetectorScale`): its size."""


@dataclass
class TaskState:
    task_id: str
    environment_id: str
    camera_ids: list[str]
    status: TaskStatus = TaskStatus.QUEUED
    progress: float = 0.0
    current_step: str = "queued"
    details: str = ""
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    stats: TaskStats = field(default_factory=TaskStats)
    extra: dict[str, Any] = field(default_factory=dict)
    worker_id: str | None = None
    """The worker running it (scale-out); None in the single-process server."""
    epoch: int = 0
    """How many times a worker took it (scale-out): its fencing epoch."""
    resumed_from_frame: int | None = None
    """After a resume on another worker: the global frame it continued after (its last checkpoint)."""
    queue_position: int | None = None
    """While QUEUED in a cluster: 1 for the next task a worker takes."""

    def set(self, status: TaskStatus | None = None, step: str | None = None, details: str | None = None) -> None:
        if status is not None:
            self.status = status
        if step is not None:
            self.current_step = step
        if details is not None:
            self.details = details
        self.updated_at = utcnow()
