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

Across processes: with a live-state store (``app.stores``), what the process running a task publishes also
goes to the store, and a hub whose client watches a task that runs elsewhere *follows* it there
(``follow``): the store's events feed this hub's outboxes exactly like local publishing does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.stores.live_state import LiveClose, LiveEvent, LiveFrame, LiveSink, LiveStateStore, LiveText

MessageKind = Literal["bytes", "text", "close"]


@dataclass(slots=True, frozen=True)
class Outbound:
    kind: MessageKind
    data: bytes | str = b""
    camera_id: str | None = None
    decoded_at: float | None = None
    """``time.monotonic()`` when the frame was decoded, to measure frame→send latency."""
    reason: str = ""
    """``close`` only: empty when the task ended; else why the stream stops without the task ending."""


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

    def offer_close(self, reason: str = "") -> None:
        self._items[("close", 0)] = Outbound("close", reason=reason) if reason else CLOSE
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


def wall_clock(monotonic_t: float) -> float:
    """``time.time()`` at the moment ``time.monotonic()`` read ``monotonic_t``."""
    return time.time() - (time.monotonic() - monotonic_t)


def local_monotonic(wall_t: float) -> float:
    """This process's ``time.monotonic()`` at wall-clock time ``wall_t`` (never in the future)."""
    return time.monotonic() - max(0.0, time.time() - wall_t)


@dataclass
class _Channel:
    subscribers: set[ClientOutbox] = field(default_factory=set)
    latest_frames: dict[str, FrameMessage] = field(default_factory=dict)
    latest_status: str | None = None
    closed: bool = False
    close_reason: str = ""
    closed_at: float = 0.0
    latency: LatencyStats = field(default_factory=LatencyStats)
    origin: bool = False
    """The task runs in this process."""
    sink: LiveSink | None = None
    """While following a task that runs elsewhere: the callback the live-state store feeds."""


class NotificationHub:
    """Pub/sub per task, fed by this process's tasks and, with a live-state store, by other processes'.
    Must be used from the event loop's thread."""

    def __init__(
        self, max_text: int = 32, live: LiveStateStore | None = None, retain_closed_s: float = 3600.0
    ) -> None:
        self._max_text = max_text
        self._channels: dict[str, _Channel] = {}
        self._live = live
        self._retain_closed_s = retain_closed_s
        self._following: dict[str, asyncio.Future[bool]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._gone_drops = [0, 0]
        """Frames and messages dropped for clients that have since gone (``drop_totals`` adds the connected)."""
        self.send_observer: Callable[[str, float], None] | None = None
        """Told each frame's camera and frame → send latency (seconds): the ``/metrics`` histogram."""

    def _ch(self, task_id: str) -> _Channel:
        return self._channels.setdefault(task_id, _Channel())

    def open_task(self, task_id: str) -> None:
        """The task runs in this process: what it publishes here also goes to the live-state store."""
        self._purge_closed()
        ch = self._channels.get(task_id)
        if ch is not None and ch.closed and not ch.subscribers:  # run again here (scale-out: taken back)
            del self._channels[task_id]
        self._ch(task_id).origin = True

    def subscribe(self, task_id: str) -> ClientOutbox:
        ch = self._ch(task_id)
        box = ClientOutbox(self._max_text)
        for frame in ch.latest_frames.values():
            box.offer_frame(frame)
        if ch.latest_status is not None:
            box.offer_text(ch.latest_status)
        if ch.closed:
            box.offer_close(ch.close_reason)
        else:
            ch.subscribers.add(box)
        return box

    def unsubscribe(self, task_id: str, box: ClientOutbox) -> None:
        ch = self._channels.get(task_id)
        if ch is None:
            return
        if box in ch.subscribers:
            ch.subscribers.discard(box)
            self._count_gone(box)
        if ch.sink is not None and not ch.subscribers:
            self._stop_following(task_id, ch)

    def subscriber_count(self, task_id: str) -> int:
        ch = self._channels.get(task_id)
        return len(ch.subscribers) if ch else 0

    def wants_low_variant(self, task_id: str) -> bool:
        """Whether any client of the task, here or in another process, is constrained (so encoding a
        lighter frame is worth it)."""
        ch = self._channels.get(task_id)
        if ch is not None and any(b.constrained for b in ch.subscribers):
            return True
        return self._live is not None and self._live.remote_wants_low(task_id)

    def publish_frame(self, task_id: str, frame: FrameMessage) -> None:
        ch = self._ch(task_id)
        self._deliver_frame(ch, frame)
        if self._live is not None and ch.sink is None:
            self._live.publish(
                task_id, LiveFrame(frame.camera_id, frame.data, wall_clock(frame.decoded_at), frame.low)
            )

    def publish_json(self, task_id: str, message: dict[str, Any]) -> None:
        ch = self._ch(task_id)
        text = json.dumps(message, separators=(",", ":"))
        kind = str(message.get("type", ""))
        self._deliver_text(ch, text, kind)
        if self._live is not None and ch.sink is None:
            self._live.publish(task_id, LiveText(text, kind, message))

    def _deliver_frame(self, ch: _Channel, frame: FrameMessage) -> None:
        ch.latest_frames[frame.camera_id] = frame
        for box in ch.subscribers:
            box.offer_frame(frame)

    def _deliver_text(self, ch: _Channel, text: str, kind: str) -> None:
        if kind == "status_update":
            ch.latest_status = text
        for box in ch.subscribers:
            box.offer_text(text)

    def record_send(self, task_id: str, msg: Outbound) -> None:
        if msg.camera_id is not None and msg.decoded_at is not None:
            latency_s = time.monotonic() - msg.decoded_at
            self._ch(task_id).latency.record(msg.camera_id, latency_s * 1000.0)
            if self.send_observer is not None:
                self.send_observer(msg.camera_id, latency_s)

    def _count_gone(self, box: ClientOutbox) -> None:
        self._gone_drops[0] += box.dropped_frames
        self._gone_drops[1] += box.dropped_texts

    def drop_totals(self) -> tuple[int, int]:
        """Frames and JSON messages dropped for slow clients since this hub started (monotonic)."""
        frames, texts = self._gone_drops
        for ch in self._channels.values():
            for b in ch.subscribers:
                frames += b.dropped_frames
                texts += b.dropped_texts
        return frames, texts

    def clients_per_task(self) -> dict[str, int]:
        return {tid: len(ch.subscribers) for tid, ch in self._channels.items()}

    def client_stats(self, task_id: str) -> dict[str, int]:
        """Connected clients and the frames/messages dropped for slow ones (so far, connected clients)."""
        ch = self._channels.get(task_id)
        boxes = ch.subscribers if ch else set()
        return {
            "clients": len(boxes),
            "dropped_frames": sum(b.dropped_frames for b in boxes),
            "dropped_messages": sum(b.dropped_texts for b in boxes),
        }

    def latency(self, task_id: str) -> dict[str, dict[str, float]]:
        ch = self._channels.get(task_id)
        return ch.latency.percentiles() if ch else {}

    def close_task(self, task_id: str, publish: bool = True) -> None:
        """Tell every client here the task has ended; later subscribers get the last status and a close.
        ``publish=False`` (scale-out: the task continues on another worker): other processes' clients are not
        told it ended; this process only stops publishing it."""
        ch = self._ch(task_id)
        self._close(ch)
        if self._live is not None and ch.sink is None:
            if publish:
                self._live.publish(task_id, LiveClose())
            else:
                self._live.release_task(task_id)

    def _close(self, ch: _Channel, reason: str = "") -> None:
        ch.closed, ch.close_reason, ch.closed_at = True, reason, time.monotonic()
        for box in ch.subscribers:
            box.offer_close(reason)
            self._count_gone(box)
        ch.subscribers.clear()

    def _purge_closed(self) -> None:
        """Forget channels closed longer than ``retain_closed_s`` ago (their last frames are for late joiners)."""
        limit = time.monotonic() - self._retain_closed_s
        for tid in [t for t, c in self._channels.items() if c.closed and c.closed_at < limit and not c.subscribers]:
            del self._channels[tid]

    # -- tasks that run in another process ------------------------------------------------------
    def is_streaming(self, task_id: str) -> bool:
        """This hub has the task's stream: it runs here, is followed, or ended here recently."""
        ch = self._channels.get(task_id)
        return ch is not None and (ch.origin or ch.sink is not None or ch.closed)

    async def follow(self, task_id: str) -> bool:
        """Stream a task that runs in another process through this hub; False when no process knows it.
        Raises ``LiveStateUnavailableError`` when the store cannot be read."""
        if self.is_streaming(task_id):
            return True
        if self._live is None:
            return False
        self._purge_closed()
        pending = self._following.get(task_id)
        if pending is None:
            pending = asyncio.ensure_future(self._start_following(task_id, self._live))
            self._following[task_id] = pending
            pending.add_done_callback(lambda _: self._following.pop(task_id, None))
        return await asyncio.shield(pending)

    async def _start_following(self, task_id: str, live: LiveStateStore) -> bool:
        ch = self._ch(task_id)
        ch.sink = functools.partial(self._on_remote, task_id)
        try:
            start = await live.follow(task_id, ch.sink)
        except BaseException:
            ch.sink = None
            self._drop_if_unused(task_id, ch)
            raise
        if start is None:
            ch.sink = None
            self._drop_if_unused(task_id, ch)
            return False
        for cam, f in start.frames.items():  # events that arrived while subscribing are newer: keep them
            if cam not in ch.latest_frames:
                ch.latest_frames[cam] = FrameMessage(cam, f.data, local_monotonic(f.produced_at), f.low)
        if ch.latest_status is None:
            ch.latest_status = start.status_text
        if start.closed and not ch.closed:
            ch.sink = None
            self._close(ch)
        return True

    def _on_remote(self, task_id: str, event: LiveEvent) -> None:
        ch = self._channels.get(task_id)
        if ch is None or ch.sink is None or ch.closed:
            return
        if isinstance(event, LiveFrame):
            self._deliver_frame(
                ch, FrameMessage(event.camera_id, event.data, local_monotonic(event.produced_at), event.low)
            )
            if self._live is not None and any(b.constrained for b in ch.subscribers):
                self._live.request_low_variant(task_id)
        elif isinstance(event, LiveText):
            self._deliver_text(ch, event.text, event.kind)
        else:
            ch.sink = None
            self._close(ch, event.reason)

    def _stop_following(self, task_id: str, ch: _Channel) -> None:
        """The last local client of a followed task left: stop receiving it."""
        sink, ch.sink = ch.sink, None
        self._drop_if_unused(task_id, ch)
        if self._live is not None and sink is not None:
            t = asyncio.get_running_loop().create_task(self._unfollow(task_id, sink, self._live))
            self._background.add(t)
            t.add_done_callback(self._background.discard)

    @staticmethod
    async def _unfollow(task_id: str, sink: LiveSink, live: LiveStateStore) -> None:
        with contextlib.suppress(Exception):
            await live.unfollow(task_id, sink)

    def _drop_if_unused(self, task_id: str, ch: _Channel) -> None:
        if not ch.origin and not ch.closed and not ch.subscribers and self._channels.get(task_id) is ch:
            del self._channels[task_id]
