"""Identity events: what happened to global identities, kept in a bounded in-memory log.

The registry records one event per decision that a person-level consumer cares about (a new person, a
person recognised in another camera or again after leaving, two ids found to be one person, a person gone
from every camera). The log is bounded so a long task cannot grow memory; a later store can drain it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class IdentityEventKind(StrEnum):
    CREATED = "created"
    """A track started a new global identity."""
    MATCHED = "matched"
    """A new track joined an existing identity (another camera at the same time, or a re-appearance)."""
    MERGED = "merged"
    """Two global ids turned out to be one person; `merged_id` lives on as `global_id`."""
    MOVED = "moved"
    """A track's evidence contradicted its identity and it moved to another one (e.g. a tracker id switch)."""
    LOST = "lost"
    """The identity has not been seen by any camera for a while (it may still come back)."""


@dataclass(slots=True, frozen=True)
class IdentityEvent:
    kind: IdentityEventKind
    global_id: int
    timestamp_s: float
    """Video time of the decision."""
    camera_id: str | None = None
    track_id: int | None = None
    merged_id: int | None = None
    """MERGED: the id that ceased to exist. MOVED: the identity the track left."""
    score: float | None = None
    """The log-odds that decided it: MATCHED or MERGED by re-entry linking (matched when the link was made in the
    frame the track appeared), MOVED when two people who crossed got their identities back (`crossings`)."""

    def to_message(self) -> dict[str, Any]:
        """JSON body of an ``identity_event`` WebSocket message (without the task fields)."""
        msg: dict[str, Any] = {"type": "identity_event", "event": self.kind.value, "global_id": self.global_id,
                               "timestamp_video_s": round(self.timestamp_s, 4)}
        for key in ("camera_id", "track_id", "merged_id"):
            value = getattr(self, key)
            if value is not None:
                msg[key] = value
        if self.score is not None:
            msg["score"] = round(self.score, 4)
        return msg


class IdentityEventLog:
    """The last `capacity` events, plus the ones not yet handed out by `drain`."""

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError(f"event log capacity must be >= 1, got {capacity}")
        self._recent: deque[IdentityEvent] = deque(maxlen=capacity)
        self._pending: deque[IdentityEvent] = deque(maxlen=capacity)
        self.counts: dict[str, int] = {}

    def emit(self, event: IdentityEvent) -> None:
        self._recent.append(event)
        self._pending.append(event)
        self.counts[event.kind.value] = self.counts.get(event.kind.value, 0) + 1

    def drain(self) -> list[IdentityEvent]:
        """Events emitted since the last drain, oldest first (at most `capacity`)."""
        out = list(self._pending)
        self._pending.clear()
        return out

    def recent(self) -> list[IdentityEvent]:
        return list(self._recent)
