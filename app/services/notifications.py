"""Fan-out of a task's frames and JSON messages to its WebSocket clients.

Each client has its own bounded queue. When a client reads slower than the pipeline produces, the oldest
queued message is dropped for the new one, so a slow client only loses frames of its own and never holds
up the pipeline or the other clients. The latest JPEG of every camera is kept so a client that joins late
sees a picture at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

log = logging.getLogger(__name__)

MessageKind = Literal["bytes", "text", "close"]


@dataclass(slots=True, frozen=True)
class Outbound:
    kind: MessageKind
    data: bytes | str = b""


CLOSE = Outbound("close")


@dataclass(eq=False)
class Subscriber:
    queue: asyncio.Queue[Outbound]
    dropped: int = 0

    def offer(self, message: Outbound) -> None:
        """Queue a message; when full, the oldest message makes room (newest wins)."""
        while True:
            try:
                self.queue.put_nowait(message)
                return
            except asyncio.QueueFull:
                try:
                    self.queue.get_nowait()
                    self.dropped += 1
                except asyncio.QueueEmpty:  # pragma: no cover - raced with the reader
                    pass


@dataclass
class _Channel:
    subscribers: set[Subscriber] = field(default_factory=set)
    latest_frames: dict[str, bytes] = field(default_factory=dict)
    latest_status: str | None = None
    closed: bool = False


class NotificationHub:
    """In-process pub/sub per task. Must be used from the event loop's thread."""

    def __init__(self, queue_size: int = 8) -> None:
        self._queue_size = max(2, queue_size)
        self._channels: dict[str, _Channel] = {}

    def open_task(self, task_id: str) -> None:
        self._channels.setdefault(task_id, _Channel())

    def subscribe(self, task_id: str) -> Subscriber:
        ch = self._channels.setdefault(task_id, _Channel())
        sub = Subscriber(asyncio.Queue(maxsize=self._queue_size + len(ch.latest_frames) + 2))
        for frame in ch.latest_frames.values():
            sub.offer(Outbound("bytes", frame))
        if ch.latest_status is not None:
            sub.offer(Outbound("text", ch.latest_status))
        if ch.closed:
            sub.offer(CLOSE)
        else:
            ch.subscribers.add(sub)
        return sub

    def unsubscribe(self, task_id: str, sub: Subscriber) -> None:
        ch = self._channels.get(task_id)
        if ch is not None:
            ch.subscribers.discard(sub)

    def subscriber_count(self, task_id: str) -> int:
        ch = self._channels.get(task_id)
        return len(ch.subscribers) if ch else 0

    def publish_frame(self, task_id: str, camera_id: str, payload: bytes) -> None:
        ch = self._channels.setdefault(task_id, _Channel())
        ch.latest_frames[camera_id] = payload
        msg = Outbound("bytes", payload)
        for sub in ch.subscribers:
            sub.offer(msg)

    def publish_json(self, task_id: str, message: dict[str, Any]) -> None:
        ch = self._channels.setdefault(task_id, _Channel())
        text = json.dumps(message, separators=(",", ":"))
        if message.get("type") == "status_update":
            ch.latest_status = text
        msg = Outbound("text", text)
        for sub in ch.subscribers:
            sub.offer(msg)

    def close_task(self, task_id: str) -> None:
        """Tell every client the task has ended; later subscribers get the last status and a close."""
        ch = self._channels.setdefault(task_id, _Channel())
        ch.closed = True
        for sub in ch.subscribers:
            sub.offer(CLOSE)
        ch.subscribers.clear()
