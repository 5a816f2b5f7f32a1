"""Live state of processing tasks, and the fan-out of their frames and messages between API processes.

The process that runs a task *publishes* every frame and JSON message it streams; the store keeps what a
newcomer needs (the task's status snapshot, the latest JPEG and tracks per camera, an identity summary, the
latest ``status_update``) for ``live_state_ttl_s`` after the last write, and hands each event to every
process that *follows* the task because one of its WebSocket clients watches it. Two implementations:

* ``InProcessLiveState`` (default): one process, nothing to run. Following works between hubs that share
  the object (tests use that to exercise the cross-process path without a server).
* ``RedisLiveState`` (``SPOTON_REDIS_URL``): keys with TTLs and a pub/sub channel per task, so a second API
  process can stream a task that runs in the first.

Publishing never blocks the pipeline: the Redis store queues events (bounded, oldest frames/messages
dropped and counted) and writes them from a background task; an unreachable Redis degrades the store and
only the other processes' clients notice.

Clocks: ``LiveFrame.produced_at`` is wall-clock time (``time.time()``) because monotonic clocks of two
processes are unrelated; a follower converts it back to its own monotonic clock to measure frame→send
latency, which across hosts is only as good as their clock synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from app.core.config import Settings
    from app.core.lifecycle import ComponentHealth


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """A camera's JPEG as streamed (already in the WebSocket wire format)."""

    camera_id: str
    data: bytes
    produced_at: float
    """Wall-clock time (``time.time()``) at which the frame existed (decoded, or due when played live)."""
    low: bytes | None = None
    """The lighter variant for constrained clients, when the pipeline made one."""


@dataclass(frozen=True, slots=True)
class LiveText:
    """A JSON message as streamed (``tracking_update``, ``frame_sync``, ``status_update``, ...)."""

    text: str
    kind: str
    """The message's ``type``."""
    message: dict[str, Any] | None = field(default=None, compare=False)
    """The decoded message on the publishing side (saves parsing it again); None after the bus."""


@dataclass(frozen=True, slots=True)
class LiveClose:
    """The stream of a task ends. An empty reason: the task ended; else why a follower stops (owner lost)."""

    reason: str = ""


LiveEvent = LiveFrame | LiveText | LiveClose
LiveSink = Callable[[LiveEvent], None]
SnapshotFn = Callable[[], dict[str, Any]]


@dataclass(slots=True)
class FollowStart:
    """What a process sees when it starts following a task: enough for its late joiners."""

    snapshot: dict[str, Any]
    frames: dict[str, LiveFrame]
    status_text: str | None
    closed: bool


@dataclass(slots=True)
class LiveStateHealth:
    backend: Literal["memory", "redis"]
    connected: bool
    detail: str
    info: dict[str, Any]


class LiveStateUnavailableError(RuntimeError):
    """The live state could not be read (its server is unreachable)."""


class LiveStateStore(Protocol):
    backend: Literal["memory", "redis"]

    async def start(self) -> None:
        """Connect and start background work; an unreachable server degrades the store, it does not fail."""

    async def close(self) -> None: ...

    def health(self) -> LiveStateHealth: ...

    # -- the process that runs a task --------------------------------------------------------------
    def register_task(self, task_id: str, snapshot: SnapshotFn, epoch: int = 0) -> None:
        """This process runs the task; ``snapshot()`` is its status (JSON-able), re-read on every status
        message, periodically and at the close. ``epoch`` > 0 (scale-out) fences: once a process registered
        the task with a higher epoch, nothing more of this one reaches the store or its followers."""

    def announce_task(self, task_id: str, snapshot: dict[str, Any]) -> None:
        """Write a snapshot of a task another process will run (scale-out: queued), so that clients can follow
        it before it starts; no heartbeat."""

    def release_task(self, task_id: str) -> None:
        """Stop publishing the task (snapshot, heartbeat) without ending its stream: another process takes it
        over (scale-out)."""

    def publish(self, task_id: str, event: LiveEvent) -> None:
        """Record and fan out one event; never blocks. ``LiveClose`` ends the task's registration."""

    async def flush(self, timeout: float) -> bool:
        """Wait until what was published so far is visible to other processes; False on timeout."""

    def remote_wants_low(self, task_id: str) -> bool:
        """A client in another process is constrained (so the low-quality variant is worth encoding)."""

    # -- any process -----------------------------------------------------------------------------
    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        """The task's latest status snapshot, from whichever process runs it; None when unknown."""

    async def latest_frames(self, task_id: str) -> dict[str, LiveFrame]: ...

    async def latest_tracks(self, task_id: str) -> dict[str, Any]:
        """Per camera, the ``cameras[cam]`` entry of the latest ``tracking_update``."""

    async def identity_summary(self, task_id: str) -> dict[str, Any] | None:
        """Who is visible now: global ids with their cameras and map position (latest tracking_update)."""

    async def follow(self, task_id: str, sink: LiveSink) -> FollowStart | None:
        """Feed the task's future events to ``sink`` (on the event loop); None (and no feed) when unknown."""

    async def unfollow(self, task_id: str, sink: LiveSink) -> None:
        """Stop feeding ``sink`` (a no-op when another follow replaced it)."""

    def request_low_variant(self, task_id: str) -> None:
        """Ask the task's process for low-quality variants: a client here is constrained."""


def build_live_state(settings: Settings) -> LiveStateStore:
    """``RedisLiveState`` when ``SPOTON_REDIS_URL`` is set, else the in-process store."""
    if settings.redis_url:
        from app.stores.redis_live_state import RedisLiveState

        return RedisLiveState(
            settings.redis_url,
            prefix=settings.redis_key_prefix,
            ttl_s=settings.live_state_ttl_s,
            queue_size=settings.live_publish_queue_size,
            owner_timeout_s=settings.live_owner_timeout_s,
            timeout_s=settings.redis_timeout_s,
            owner_lost="close" if not settings.nats_url else "resume",
        )
    from app.stores.memory_live_state import InProcessLiveState

    return InProcessLiveState(ttl_s=settings.live_state_ttl_s)


def health_probe(store: LiveStateStore) -> Callable[[ComponentHealth], None]:
    """Refreshes the ``state_store`` component of ``/health``: backend, connectivity, counters; an
    unreachable Redis makes it (and so the service) ``degraded``, never unhealthy."""

    def probe(h: ComponentHealth) -> None:
        r = store.health()
        h.device = "in-process" if r.backend == "memory" else "redis"
        h.info.update(backend=r.backend, connected=r.connected, **r.info)
        if r.connected:
            h.info.pop("degraded", None)
            h.detail = ""
        else:
            h.info["degraded"] = h.detail = r.detail

    return probe
