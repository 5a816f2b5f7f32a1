"""Live state in this process's memory: the embedded default (one API process, nothing to run)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from app.stores.live_codec import identity_summary, tracks_by_camera
from app.stores.live_state import (
    FollowStart,
    LiveClose,
    LiveEvent,
    LiveFrame,
    LiveSink,
    LiveStateHealth,
    LiveText,
    SnapshotFn,
)

PURGE_EVERY_S = 10.0


@dataclass
class _Entry:
    snapshot: dict[str, Any] | None = None
    frames: dict[str, LiveFrame] = field(default_factory=dict)
    status_text: str | None = None
    tracking: dict[str, Any] | None = None
    """The latest ``tracking_update`` as published; summaries are derived when read."""
    closed: bool = False
    expires_at: float = 0.0


class InProcessLiveState:
    """Dicts with TTLs; followers are called synchronously. Must be used from the event loop's thread."""

    backend: Literal["memory", "redis"] = "memory"

    def __init__(self, ttl_s: float = 3600.0) -> None:
        if ttl_s <= 0:
            raise ValueError(f"live state TTL must be > 0 s, got {ttl_s}")
        self._ttl = ttl_s
        self._entries: dict[str, _Entry] = {}
        self._owned: dict[str, SnapshotFn] = {}
        self._followers: dict[str, list[LiveSink]] = {}
        self._next_purge = 0.0
        self.published = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._followers.clear()

    def health(self) -> LiveStateHealth:
        return LiveStateHealth(
            "memory", True, "", {"tasks": len(self._entries), "published": self.published, "dropped": 0}
        )

    # -- producer ----------------------------------------------------------------------------------
    def register_task(self, task_id: str, snapshot: SnapshotFn, epoch: int = 0) -> None:
        self._owned[task_id] = snapshot
        self._touch(task_id).snapshot = snapshot()

    def announce_task(self, task_id: str, snapshot: dict[str, Any]) -> None:
        self._touch(task_id).snapshot = snapshot

    def release_task(self, task_id: str) -> None:
        self._owned.pop(task_id, None)

    def publish(self, task_id: str, event: LiveEvent) -> None:
        e = self._touch(task_id)
        self.published += 1
        if isinstance(event, LiveFrame):
            e.frames[event.camera_id] = event
        elif isinstance(event, LiveText):
            if event.kind == "status_update":
                e.status_text = event.text
                self._snap(task_id, e)
            elif event.kind == "tracking_update" and event.message is not None:
                e.tracking = event.message
        else:
            self._snap(task_id, e)
            e.closed = True
            self._owned.pop(task_id, None)
        for sink in list(self._followers.get(task_id, ())):
            sink(event)
        if isinstance(event, LiveClose):
            self._followers.pop(task_id, None)

    async def flush(self, timeout: float) -> bool:
        return True

    def remote_wants_low(self, task_id: str) -> bool:
        return False  # every client of this store's tasks is in this process: the hub sees them itself

    def request_low_variant(self, task_id: str) -> None:
        return None

    # -- readers -----------------------------------------------------------------------------------
    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        e = self._live(task_id)
        if e is None:
            return None
        if task_id in self._owned:
            self._snap(task_id, e)
        return e.snapshot

    async def latest_frames(self, task_id: str) -> dict[str, LiveFrame]:
        e = self._live(task_id)
        return dict(e.frames) if e else {}

    async def latest_tracks(self, task_id: str) -> dict[str, Any]:
        e = self._live(task_id)
        return tracks_by_camera(e.tracking) if e and e.tracking else {}

    async def identity_summary(self, task_id: str) -> dict[str, Any] | None:
        e = self._live(task_id)
        return identity_summary(e.tracking) if e and e.tracking else None

    async def follow(self, task_id: str, sink: LiveSink) -> FollowStart | None:
        e = self._live(task_id)
        if e is None or e.snapshot is None:
            return None
        if not e.closed:
            self._followers.setdefault(task_id, []).append(sink)
        return FollowStart(dict(e.snapshot), dict(e.frames), e.status_text, e.closed)

    async def unfollow(self, task_id: str, sink: LiveSink) -> None:
        sinks = self._followers.get(task_id, [])
        if sink in sinks:
            sinks.remove(sink)

    # -- internals ---------------------------------------------------------------------------------
    def _snap(self, task_id: str, e: _Entry) -> None:
        fn = self._owned.get(task_id)
        if fn is not None:
            e.snapshot = fn()

    def _touch(self, task_id: str) -> _Entry:
        now = time.monotonic()
        if now >= self._next_purge:
            self._purge(now)
        e = self._entries.setdefault(task_id, _Entry())
        e.expires_at = now + self._ttl
        return e

    def _live(self, task_id: str) -> _Entry | None:
        e = self._entries.get(task_id)
        if e is None or (task_id not in self._owned and e.expires_at <= time.monotonic()):
            return None
        return e

    def _purge(self, now: float) -> None:
        """Forget tasks nobody wrote for ``ttl_s`` (tasks still running here are kept)."""
        self._next_purge = now + PURGE_EVERY_S
        for tid in [t for t, e in self._entries.items() if e.expires_at <= now and t not in self._owned]:
            del self._entries[tid]
            self._followers.pop(tid, None)
