"""The rows the history keeps, as plain dataclasses, and their JSON form for the disk spool.

Every record carries a deterministic unique key (tracking: task, camera, frame, track, time; identity: task,
sequence, time; task run: task id) so that writing it twice — a replay after a crash between the insert and
the spool delete — stores it once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from typing import Any, ClassVar


def epoch_to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@dataclass(slots=True, frozen=True)
class TrackingEventRecord:
    """One person box of one camera in one processed frame."""

    kind: ClassVar[str] = "tracking"
    ts: float
    """Event time, seconds since the epoch: the task's playback start (UTC) + the frame's video timestamp."""
    task_id: str
    environment_id: str
    camera_id: str
    frame_index: int
    track_id: int
    global_id: int
    x1: float
    y1: float
    x2: float
    y2: float
    confidence: float
    map_x: float | None
    """Foot point on the map, metres; None when it is off the ground plane."""
    map_y: float | None
    video_ts_s: float
    """Timestamp of the global frame in the video (seconds from the task's first frame)."""
    sample_s: float
    """Video seconds this frame stands for: since the task's previous processed frame (skips included)."""
    epoch: int = 0
    """Scale-out: the run's fencing epoch; refused once a higher epoch took the task (0: not fenced)."""


@dataclass(slots=True, frozen=True)
class IdentityEventRecord:
    """A decision about a global identity (created, matched, merged, moved, lost)."""

    kind: ClassVar[str] = "identity"
    ts: float
    task_id: str
    environment_id: str
    seq: int
    """Position of the event in its task (from 1): with task_id, the event's unique key."""
    event: str
    global_id: int
    other_id: int | None
    """MERGED: the id that ceased to exist (it lives on as ``global_id``). MOVED: the identity the track left."""
    camera_id: str | None
    track_id: int | None
    score: float | None
    video_ts_s: float
    epoch: int = 0


@dataclass(slots=True, frozen=True)
class TaskRunRecord:
    """The state of a task run at ``updated_ts``; a later state replaces an earlier one, never the reverse."""

    kind: ClassVar[str] = "task_run"
    task_id: str
    environment_id: str
    camera_ids: tuple[str, ...]
    status: str
    created_ts: float
    started_ts: float | None
    """Playback start (the origin of the task's event times); None until the task plays."""
    ended_ts: float | None
    updated_ts: float
    frames_processed: int
    frames_skipped: int
    details: str = ""
    epoch: int = 0


Record = TrackingEventRecord | IdentityEventRecord | TaskRunRecord
_TYPES: dict[str, type[TrackingEventRecord] | type[IdentityEventRecord] | type[TaskRunRecord]] = {
    t.kind: t for t in (TrackingEventRecord, IdentityEventRecord, TaskRunRecord)
}


def record_to_json(record: Record) -> dict[str, Any]:
    d = asdict(record)
    d["kind"] = record.kind
    if isinstance(record, TaskRunRecord):
        d["camera_ids"] = list(record.camera_ids)
    return d


def record_from_json(d: dict[str, Any]) -> Record:
    """The record a spool line holds; a clear error for a line that is not one."""
    try:
        cls = _TYPES[d["kind"]]
    except (KeyError, TypeError):
        raise ValueError(f"not a history record: {str(d)[:200]}") from None
    names = {f.name for f in fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    if cls is TaskRunRecord:
        kwargs["camera_ids"] = tuple(kwargs.get("camera_ids", ()))
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"malformed {d['kind']} record: {exc}") from None
