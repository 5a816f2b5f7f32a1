"""Fan-out of a task's frames and JSON messages to its WebSocket clients.

Every client gets its own bounded outbox, and publishing never waits on a client:

* frames are coalesced per camera — a newer frame of a camera replaces the one still waiting (newest
  wins), so a slow client sees fewer frames, never older ones;
* JSON messages wait in order behind the frames published before them, so a ``tracking_update`` always
  leaves after the JPEGs of its global frame that are still queued; when a client falls far behind, its
  oldest JSON messages are dropped (and counted);
* a client whose outbox keeps overflowing is *constrained*: it is sent the low-quality variant of frames
  when the pipeline makes one (adaptive JPEG per client).

The latest JPEG of every camera and the latest ``status_update`` are kept, so a client that joins late
sees a picture at once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

MessageKind = Literal["bytes", "text", "close"]


@dataclass(slots=True, frozen=True)
class Outbound:
    kind: MessageKind
    data: bytes | str = b""
    camera_id: str | None = None
    decoded_at: float | None = None
    """``time.monotonic()`` when the frame was decoded, to measure frame→send latency."""


CLOSE = Outbound("close")


@dataclass(slots=True, frozen=True)
class FrameMessage:
    """One camera frame as published: the normal variant and, when clients need it, a lighter one."""

    camera_id: str
    data: bytes
    decoded_at: float
    low: bytes | None = None


class ClientOutbox:
    """A client's pending messages: at most one frame per camera, a bounded number of JSON messages."""

    def __init__(self, max_text: int = 32, constrained_after_drops: int = 3) -> None:
        self._items: OrderedDict[object, Outbound] = OrderedDict()
        self._max_text = max(2, max_text)
        self._text_count = 0
        self._seq = 0
        self._wake = asyncio.Event()
        self.dropped_frames = 0
        self.dropped_texts = 0
        self.closed = False
        self._recent_drops: deque[float] = deque(maxlen=64)
        self._constrained_after = constrained_after_drops
        self.behind_since: float | None = None
        """When the client last went from keeping up to having frames replaced; None while keeping up."""

    # -- producer side --------------------------------------------------------------------------
    def offer_frame(self, frame: FrameMessage) -> None:
        if self.closed:
            return
        key = ("frame", frame.camera_id)
        if self._items.pop(key, None) is not None:
            self.dropped_frames += 1
            now = time.monotonic()
            self._recent_drops.append(now)
            if self.behind_since is None:
                self.behind_since = now
        data = frame.low if (frame.low is not None and self.constrained) else frame.data
        self._items[key] = Outbound("bytes", data, frame.camera_id, frame.decoded_at)
        self._wake.set()

    def offer_text(self, text: str) -> None:
        if self.closed:
            return
        if self._text_count >= self._max_text:
            for k in list(self._items):
                if isinstance(k, tuple) and k[0] == "text":
                    del self._items[k]
                    self._text_count -= 1
                    self.dropped_texts += 1
                    break
        self._seq += 1
        self._items[("text", self._seq)] = Outbound("text", text)
        self._text_count += 1
        self._wake.set()

    def offer_close(self) -> None:
        self._items[("close", 0)] = CLOSE
        self.closed = True
        self._wake.set()

    # -- consumer side --------------------------------------------------------------------------
    async def get(self) -> Outbound:
        while not self._items:
            self._wake.clear()
            await self._wake.wait()
        _, msg = self._items.popitem(last=False)
        if msg.kind == "text":
            self._text_count -= 1
        if not self._items:
            self.behind_since = None
        return msg

    def pending(self) -> int:
        return len(self._items)

    @property
    def constrained(self) -> bool:
        """Frames were replaced several times within the last two seconds."""
        now = time.monotonic()
        return sum(1 for t in self._recent_drops if now - t < 2.0) >= self._constrained_after


@dataclass
class LatencyStats:
    """Frame→send latency samples per camera (milliseconds), recorded at the actual WebSocket send."""

    samples: dict[str, deque[float]] = field(default_factory=dict)

    def record(self, camera_id: str, ms: float) -> None:
        self.samples.setdefault(camera_id, deque(maxlen=500)).append(ms)

    def percentiles(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for cam, s in self.samples.items():
            if s:
                p50, p95, p99 = np.percentile(np.fromiter(s, float), [50, 95, 99])
                out[cam] = {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1)}
        return out


@dataclass
class _Channel:
    subscribers: set[ClientOutbox] = field(default_factory=set)
    latest_frames: dict[str, FrameMessage] = field(default_factory=dict)
    latest_status: str | None = None
    closed: bool = False
    latency: LatencyStats = field(default_factory=LatencyStats)


class NotificationHub:
    """In-process pub/sub per task. Must be used from the event loop's thread."""

    def __init__(self, max_text: int = 32) -> None:
        self._max_text = max_text
        self._channels: dict[str, _Channel] = {}

    def _ch(self, task_id: str) -> _Channel:
        return self._channels.setdefault(task_id, _Channel())

    def open_task(self, task_id: str) -> None:
        self._ch(task_id)

    def subscribe(self, task_id: str) -> ClientOutbox:
        ch = self._ch(task_id)
        box = ClientOutbox(self._max_text)
        for frame in ch.latest_frames.values():
            box.offer_frame(frame)
        if ch.latest_status is not None:
            box.offer_text(ch.latest_status)
        if ch.closed:
            box.offer_close()
        else:
            ch.subscribers.add(box)
        return box

    def unsubscribe(self, task_id: str, box: ClientOutbox) -> None:
        ch = self._channels.get(task_id)
        if ch is not None:
            ch.subscribers.discard(box)

    def subscriber_count(self, task_id: str) -> int:
        ch = self._channels.get(task_id)
        return len(ch.subscribers) if ch else 0

    def wants_low_variant(self, task_id: str) -> bool:
        """Whether any client of the task is constrained (so encoding a lighter frame is worth it)."""
        ch = self._channels.get(task_id)
        return bool(ch) and any(b.constrained for b in ch.subscribers)  # type: ignore[union-attr]

    def publish_frame(self, task_id: str, frame: FrameMessage) -> None:
        ch = self._ch(task_id)
        ch.latest_frames[frame.camera_id] = frame
        for box in ch.subscribers:
            box.offer_frame(frame)

    def publish_json(self, task_id: str, message: dict[str, Any]) -> None:
        ch = self._ch(task_id)
        text = json.dumps(message, separators=(",", ":"))
        if message.get("type") == "status_update":
            ch.latest_status = text
        for box in ch.subscribers:
            box.offer_text(text)

    def record_send(self, task_id: str, msg: Outbound) -> None:
        if msg.camera_id is not None and msg.decoded_at is not None:
            self._ch(task_id).latency.record(msg.camera_id, (time.monotonic() - msg.decoded_at) * 1000.0)

    def latency(self, task_id: str) -> dict[str, dict[str, float]]:
        ch = self._channels.get(task_id)
        return ch.latency.percentiles() if ch else {}

    def close_task(self, task_id: str) -> None:
        """Tell every client the task has ended; later subscribers get the last status and a close."""
        ch = self._ch(task_id)
        ch.closed = True
        for box in ch.subscribers:
            box.offer_close()
        ch.subscribers.clear()
