"""What the KV buckets hold: one ``TaskRecord`` per task, one ``WorkerRecord`` per worker (JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue


class Placement(StrEnum):
    """Where a task is in the cluster (its pipeline status comes from the worker's live snapshot)."""

    QUEUED = "QUEUED"
    """Waiting for a worker with a free slot."""
    RUNNING = "RUNNING"
    """A worker holds its lease."""
    REQUEUED = "REQUEUED"
    """Handed back (worker shutting down) or its worker stopped renewing the lease: waiting to resume."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"

    @property
    def finished(self) -> bool:
        return self in (Placement.COMPLETED, Placement.FAILED, Placement.STOPPED)


@dataclass(slots=True)
class TaskRecord:
    task_id: str
    environment_id: str
    camera_ids: list[str]
    created_ts: float
    owner: str = ""
    """The API key name that started it (per-key limits count it)."""
    placement: Placement = Placement.QUEUED
    worker_id: str | None = None
    epoch: int = 0
    """Raised by every worker that takes the task: records of a lower epoch are refused (fencing)."""
    resumed_from_frame: int | None = None
    stop_requested: bool = False
    details: str = ""
    queue_seq: int = 0
    """The start message's stream sequence: queue order."""
    updated_ts: float = field(default_factory=time.time)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TaskRecord:
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in data.items() if k in known})
        rec.placement = Placement(rec.placement)
        return rec


@dataclass(slots=True)
class WorkerRecord:
    worker_id: str
    host: str
    pid: int
    slots: int
    running: list[str]
    device: str
    """Where the detector runs (``cpu``, ``cuda:0``)."""
    models: dict[str, Any]
    gpu: dict[str, Any]
    cpu_percent: float
    started_ts: float
    heartbeat_ts: float
    accepting: bool = True
    """False while loading models or shutting down."""
    task_gpu_mb: float | None = None
    """GPU memory one more task needs (measured at warm-up); None on CPU."""
    counters: dict[str, int] = field(default_factory=dict)
    """Tasks taken, resumed (from another worker's checkpoint), completed, handed back, lost (lease)."""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> WorkerRecord:
        data: dict[str, Any] = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class RecordChangedError(RuntimeError):
    """A task record kept changing under a compare-and-set."""


async def change_record(kv: KeyValue, task_id: str, change: Callable[[TaskRecord], bool]) -> TaskRecord | None:
    """Compare-and-set ``change`` into the task's record, re-reading it on conflict. None when ``change``
    declined (returned False); ``KeyNotFoundError`` when there is no record."""
    for _ in range(20):
        entry = await kv.get(task_id)
        record = TaskRecord.from_json(entry.value or b"{}")
        if not change(record):
            return None
        record.updated_ts = time.time()
        try:
            await kv.update(task_id, record.to_json(), last=entry.revision)
            return record
        except KeyWrongLastSequenceError:
            continue
    raise RecordChangedError(f"task {task_id}: record kept changing")

