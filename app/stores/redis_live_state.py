"""Live state in Redis: keys with TTLs for newcomers, one pub/sub channel per task for the fan-out.

Keys (``P`` is ``SPOTON_REDIS_KEY_PREFIX``, ``T`` the task id), each expiring ``live_state_ttl_s`` after its
last write:

========================  ==========================================================================
``P:task:T``              status snapshot (JSON), rewritten every second while the task runs
``P:task:T:frames``       hash camera → latest frame (bus record, without the low variant)
``P:task:T:tracks``       hash camera → its entry of the latest ``tracking_update`` (JSON)
``P:task:T:identities``   identity summary of the latest ``tracking_update`` (JSON)
``P:task:T:status``       the latest ``status_update`` text, for late joiners
``P:task:T:closed``       present once the task's stream ended
``P:task:T:alive``        heartbeat of the process running the task (expires after ``owner_timeout_s``)
``P:task:T:low``          a follower has a constrained client (expires after 3 s)
``P:task:T:epoch``        scale-out: the highest epoch a process registered the task with (fencing)
``P:task:T:bus``          pub/sub channel: frames, JSON messages and the close, in publishing order
========================  ==========================================================================

Writes go through one bounded queue drained by one background task in pipelines, so they reach Redis in
publishing order (a follower that sees the close has seen the final status). When the queue is full the
oldest frame or message is dropped (counted); snapshots and closes are never dropped. When Redis is
unreachable the batch's frames and messages are dropped (counted), the rest is retried with backoff, and
``health()`` says degraded; the task keeps running and its local clients keep streaming.

Pub/sub is fire-and-forget: a follower that was disconnected misses what was published meanwhile, then
catches up with the next frames; the close it may have missed is found by its watchdog (``closed`` key),
which also closes followers of a task whose process stopped refreshing ``alive`` (missing at two checks
``owner_timeout_s / 2`` apart, so a follower gives up between one and two owner timeouts after the last beat).
With scale-out (``owner_lost="resume"``) a follower does not give up: another worker takes the task over, so
its clients get a ``status_update`` saying ``RESUMING`` and stay connected; only the close ends the stream.

Fencing (scale-out): a task registered with an epoch is written in a transaction that watches
``P:task:T:epoch``; a batch of a process whose epoch is below the key's is dropped (counted as ``fenced``), so
a worker that was frozen past its lease cannot put a stale frame in front of anyone, even with writes it had
queued before it froze.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from app.stores.live_codec import decode_event, encode_event, identity_summary, tracks_by_camera
from app.stores.live_state import (
    FollowStart,
    LiveClose,
    LiveEvent,
    LiveFrame,
    LiveSink,
    LiveStateHealth,
    LiveStateUnavailableError,
    LiveText,
    SnapshotFn,
)

log = logging.getLogger(__name__)

BATCH = 64
LOW_FLAG_MS = 3000
OWNER_GONE = "the server process running the task stopped responding"
_ERRORS = (RedisError, OSError)


@dataclass(slots=True)
class _Item:
    task_id: str
    event: LiveEvent | None = None
    snapshot: dict[str, Any] | None = None
    low_request: bool = False
    done: asyncio.Future[None] | None = None
    announce: bool = False
    """A snapshot of a task another process will run: no heartbeat."""

    @property
    def droppable(self) -> bool:
        """Frames and messages go first; snapshots, closes and flush markers are kept."""
        return isinstance(self.event, LiveFrame | LiveText) or self.low_request


def redact(url: str) -> str:
    """``url`` without its password, for health output and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisLiveState:
    backend: Literal["memory", "redis"] = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "spoton",
        ttl_s: float = 3600.0,
        queue_size: int = 256,
        owner_timeout_s: float = 10.0,
        timeout_s: float = 2.0,
        owner_lost: Literal["close", "resume"] = "close",
    ) -> None:
        if ttl_s <= 0 or owner_timeout_s <= 0 or timeout_s <= 0 or queue_size < 1:
            raise ValueError("live state TTL, owner timeout and Redis timeout must be > 0, queue size >= 1")
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"Redis key prefix must be non-empty without spaces, got {prefix!r}")
        self.url = redact(url)
        self._redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # One immediate retry replaces a pooled connection that a Redis restart closed; our loops do
            # the rest of the retrying, with backoff, without blocking anyone.
            retry=Retry(NoBackoff(), 1),
        )
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._owner_ms = max(1, int(owner_timeout_s * 1000))
        self._beat_s = min(1.0, owner_timeout_s / 3)
        self._timeout = timeout_s
        self._max_queue = queue_size
        # producer side
        self._queue: deque[_Item] = deque()
        self._droppable = 0
        self._owned: dict[str, SnapshotFn] = {}
        self._epochs: dict[str, int] = {}
        """Epoch of each task this process registered with one (scale-out); kept after the close for late
        writes of the same run."""
        self._owner_lost = owner_lost
        self._resuming_sent: set[str] = set()
        self._wants_low: set[str] = set()
        self._wake = asyncio.Event()
        # follower side
        self._pubsub: PubSub | None = None
        self._followers: dict[str, tuple[str, LiveSink]] = {}
        """channel → (task id, sink)"""
        self._confirmed: dict[str, asyncio.Event] = {}
        self._sub_lock = asyncio.Lock()
        self._listen_wake = asyncio.Event()
        self._low_requested: dict[str, float] = {}
        self._missing: set[str] = set()
        """Followed tasks found closed or without heartbeat at the last owner check."""
        # health
        self.connected = False
        self.detail = "not started"
        self.counters = {
            "published": 0, "dropped": 0, "write_errors": 0, "received": 0, "bad_records": 0, "fenced": 0,
        }
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._unfollowing: set[asyncio.Task[None]] = set()

    # -- keys --------------------------------------------------------------------------------------
    def key(self, task_id: str, part: str = "") -> str:
        return f"{self._prefix}:task:{task_id}" + (f":{part}" if part else "")

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await asyncio.wait_for(self._redis.ping(), self._timeout)
            self._up()
        except (*_ERRORS, TimeoutError) as exc:
            self._down(exc)
        self._tasks = [
            asyncio.create_task(self._writer(), name="live-state-writer"),
            asyncio.create_task(self._listener(), name="live-state-listener"),
        ]

    async def close(self) -> None:
        """Stop the background loops and the connections, in bounded time.

        A single ``cancel()`` is not enough: redis-py's ``get_message(timeout=…)`` reads under its own timeout
        context and returns None when that timeout fires, and when our cancellation lands in the same instant
        (likely on a loaded machine: it fires every 0.5 s) the cancellation is taken for the timeout and lost —
        the listener loops on and ``await task`` never returns (the hang seen in a loaded CI run). So the loops
        also stop on a flag, and cancellation is repeated until they are done, within a deadline."""
        if self._queue and self.connected:
            await self.flush(self._timeout)
        self._closing = True
        self._wake.set()
        self._listen_wake.set()
        pending = {*self._tasks, *self._unfollowing}
        deadline = time.monotonic() + max(2.0, 2 * self._timeout)
        while pending and time.monotonic() < deadline:
            for t in pending:
                t.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.2)
        for t in pending:
            log.warning("live state: a background task did not stop within the close deadline: %s", t.get_name())
        if self._pubsub is not None:
            with contextlib.suppress(*_ERRORS, TimeoutError):
                await asyncio.wait_for(self._pubsub.aclose(), self._timeout)
        with contextlib.suppress(*_ERRORS, TimeoutError):
            await asyncio.wait_for(self._redis.aclose(), self._timeout)

    def health(self) -> LiveStateHealth:
        info: dict[str, Any] = {
            "url": self.url,
            "prefix": self._prefix,
            **self.counters,
            "queued": len(self._queue),
            "tasks_published": len(self._owned),
            "tasks_followed": len(self._followers),
        }
        return LiveStateHealth("redis", self.connected, self.detail, info)

    def _up(self) -> None:
        if not self.connected:
            log.info("live state: Redis at %s reachable", self.url)
        self.connected, self.detail = True, ""

    def _down(self, exc: BaseException) -> None:
        detail = f"Redis at {self.url} unreachable: {type(exc).__name__}: {exc}"
        if self.connected or self.detail != detail:
            log.warning("live state degraded: %s", detail)
        self.connected, self.detail = False, detail

    # -- producer ----------------------------------------------------------------------------------
    def register_task(self, task_id: str, snapshot: SnapshotFn, epoch: int = 0) -> None:
        self._owned[task_id] = snapshot
        if epoch > 0:
            if len(self._epochs) > 10_000:  # bounded: the oldest runs' epochs go first
                del self._epochs[next(iter(self._epochs))]
            self._epochs[task_id] = epoch
        self._append(_Item(task_id, snapshot=snapshot()))

    def announce_task(self, task_id: str, snapshot: dict[str, Any]) -> None:
        self._append(_Item(task_id, snapshot=snapshot, announce=True))

    def release_task(self, task_id: str) -> None:
        self._owned.pop(task_id, None)
        self._wants_low.discard(task_id)

    def publish(self, task_id: str, event: LiveEvent) -> None:
        snap = None
        if isinstance(event, LiveClose) or (isinstance(event, LiveText) and event.kind == "status_update"):
            fn = self._owned.get(task_id)
            snap = fn() if fn is not None else None
        if isinstance(event, LiveClose):
            self._owned.pop(task_id, None)
            self._wants_low.discard(task_id)
        self._append(_Item(task_id, event, snap))

    async def flush(self, timeout: float) -> bool:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._append(_Item("", done=done))
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
            return True
        except TimeoutError:
            return False

    def remote_wants_low(self, task_id: str) -> bool:
        return task_id in self._wants_low

    def request_low_variant(self, task_id: str) -> None:
        now = time.monotonic()
        if now - self._low_requested.get(task_id, 0.0) >= 1.0:
            self._low_requested[task_id] = now
            self._append(_Item(task_id, low_request=True))

    def _append(self, item: _Item) -> None:
        if item.droppable:
            if self._droppable >= self._max_queue:
                for i, old in enumerate(self._queue):
                    if old.droppable:
                        del self._queue[i]
                        self._droppable -= 1
                        self.counters["dropped"] += 1
                        break
            self._droppable += 1
        self._queue.append(item)
        self._wake.set()

    async def _writer(self) -> None:
        backoff = 0.1
        next_beat = 0.0
        while not self._closing:
            now = time.monotonic()
            if now >= next_beat:
                next_beat = now + self._beat_s
                try:
                    if self._owned:
                        await self._beat()
                    elif not self.connected:
                        await self._redis.ping()  # so that health recovers without traffic
                        self._up()
                except _ERRORS as exc:
                    self._down(exc)
            if not self._queue:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.01, next_beat - time.monotonic()))
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            self._droppable -= sum(1 for it in batch if it.droppable)
            try:
                await self._write(batch)
            except _ERRORS as exc:
                self._down(exc)
                self.counters["write_errors"] += 1
                kept = [it for it in batch if not it.droppable]
                self.counters["dropped"] += len(batch) - len(kept)
                self._queue.extendleft(reversed(kept))
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                continue
            backoff = 0.1
            self._up()
            self.counters["published"] += sum(1 for it in batch if it.event is not None)
            for it in batch:
                if it.done is not None and not it.done.done():
                    it.done.set_result(None)

    async def _write(self, batch: list[_Item]) -> None:
        fenced = {it.task_id: self._epochs[it.task_id] for it in batch if it.task_id in self._epochs}
        if not fenced:
            pipe = self._redis.pipeline(transaction=False)
            self._queue_writes(pipe, batch)
            if len(pipe):
                await pipe.execute()
            return
        for _ in range(5):
            try:
                await self._write_fenced(batch, fenced)
                return
            except WatchError:  # another process registered one of these tasks meanwhile: look again
                continue
        raise RedisError("fenced write: epoch keys kept changing")

    async def _write_fenced(self, batch: list[_Item], epochs: dict[str, int]) -> None:
        """Write ``batch`` unless a higher epoch registered its tasks; atomic with the epoch check."""
        keys = {tid: self.key(tid, "epoch") for tid in epochs}
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(*keys.values())
            current = await pipe.mget(list(keys.values()))
            stale = {tid for tid, cur in zip(keys, current, strict=True) if cur is not None and int(cur) > epochs[tid]}
            pipe.multi()
            for tid, key in keys.items():
                if tid not in stale:
                    pipe.set(key, str(epochs[tid]), px=self._ttl_ms)
            kept = [it for it in batch if it.task_id not in stale]
            if len(kept) < len(batch):
                self.counters["fenced"] += len(batch) - len(kept)
                for tid in stale:
                    self._owned.pop(tid, None)
                    log.warning("task %s: a newer worker runs it; %s's writes are dropped", tid, "this process")
            self._queue_writes(pipe, kept)
            await pipe.execute()

    def _queue_writes(self, pipe: Any, batch: list[_Item]) -> None:
        ttl = self._ttl_ms
        for it in batch:
            if not it.task_id:
                continue  # a flush marker
            if it.low_request:
                pipe.set(self.key(it.task_id, "low"), b"1", px=LOW_FLAG_MS)
                continue
            if it.snapshot is not None:
                pipe.set(self.key(it.task_id), json.dumps(it.snapshot), px=ttl)
                if it.event is None and not it.announce:  # registration: the task is alive from now on
                    pipe.set(self.key(it.task_id, "alive"), b"1", px=self._owner_ms)
            ev = it.event
            if ev is None:
                continue
            record = encode_event(ev)
            if isinstance(ev, LiveFrame):
                k = self.key(it.task_id, "frames")
                latest = record if ev.low is None else encode_event(LiveFrame(ev.camera_id, ev.data, ev.produced_at))
                pipe.hset(k, ev.camera_id, latest)
                pipe.pexpire(k, ttl)
            elif isinstance(ev, LiveText):
                self._text_state(pipe, it.task_id, ev)
            else:
                pipe.set(self.key(it.task_id, "closed"), b"1", px=ttl)
                pipe.delete(self.key(it.task_id, "alive"))
            pipe.publish(self.key(it.task_id, "bus"), record)

    def _text_state(self, pipe: Any, task_id: str, ev: LiveText) -> None:
        ttl = self._ttl_ms
        if ev.kind == "status_update":
            pipe.set(self.key(task_id, "status"), ev.text, px=ttl)
        elif ev.kind == "tracking_update" and ev.message is not None:
            cams = tracks_by_camera(ev.message)
            if cams:
                k = self.key(task_id, "tracks")
                pipe.hset(k, mapping={c: json.dumps(v, separators=(",", ":")) for c, v in cams.items()})
                pipe.pexpire(k, ttl)
            summary = identity_summary(ev.message)
            pipe.set(self.key(task_id, "identities"), json.dumps(summary, separators=(",", ":")), px=ttl)

    async def _beat(self) -> None:
        """Refresh the snapshots and heartbeats of the tasks running here; learn which want low variants."""
        owned = list(self._owned.items())
        pipe = self._redis.pipeline(transaction=False)
        low_at: list[int] = []
        for tid, fn in owned:
            if tid in self._epochs:  # fenced: through the writer's epoch check
                self._append(_Item(tid, snapshot=fn()))
            else:
                pipe.set(self.key(tid), json.dumps(fn()), px=self._ttl_ms)
                pipe.set(self.key(tid, "alive"), b"1", px=self._owner_ms)
            low_at.append(len(pipe))
            pipe.exists(self.key(tid, "low"))
        results = await pipe.execute()
        self._up()
        self._wants_low = {tid for (tid, _), i in zip(owned, low_at, strict=True) if results[i]}

    # -- readers -----------------------------------------------------------------------------------
    async def _read(self, fn: Any) -> Any:
        try:
            return await asyncio.wait_for(fn(), self._timeout)
        except (*_ERRORS, TimeoutError) as exc:
            self._down(exc)
            raise LiveStateUnavailableError(self.detail) from exc

    async def get_task(self, task_id: str) -> dict[str, Any] | None:
        raw = await self._read(lambda: self._redis.get(self.key(task_id)))
        return json.loads(raw) if raw else None

    async def latest_frames(self, task_id: str) -> dict[str, LiveFrame]:
        raw = await self._read(lambda: self._redis.hgetall(self.key(task_id, "frames")))
        return self._frames(raw)

    async def latest_tracks(self, task_id: str) -> dict[str, Any]:
        raw = await self._read(lambda: self._redis.hgetall(self.key(task_id, "tracks")))
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    async def identity_summary(self, task_id: str) -> dict[str, Any] | None:
        raw = await self._read(lambda: self._redis.get(self.key(task_id, "identities")))
        return json.loads(raw) if raw else None

    def _frames(self, raw: dict[bytes, bytes]) -> dict[str, LiveFrame]:
        out: dict[str, LiveFrame] = {}
        for value in raw.values():
            try:
                ev = decode_event(value)
            except ValueError:
                self.counters["bad_records"] += 1
                continue
            if isinstance(ev, LiveFrame):
                out[ev.camera_id] = ev
        return out

    # -- follower ----------------------------------------------------------------------------------
    async def follow(self, task_id: str, sink: LiveSink) -> FollowStart | None:
        channel = self.key(task_id, "bus")
        confirmed = self._confirmed[channel] = asyncio.Event()
        try:
            async with self._sub_lock:
                self._followers[channel] = (task_id, sink)
                if self._pubsub is None:
                    self._pubsub = self._redis.pubsub()
                await asyncio.wait_for(self._pubsub.subscribe(channel), self._timeout)
            self._listen_wake.set()
            # Read the state only once subscribed, so nothing published in between is missed.
            await asyncio.wait_for(confirmed.wait(), self._timeout)
            start = await self._read(lambda: self._read_start(task_id))
        except (*_ERRORS, TimeoutError, LiveStateUnavailableError) as exc:
            await self.unfollow(task_id, sink)
            if isinstance(exc, LiveStateUnavailableError):
                raise
            self._down(exc)
            raise LiveStateUnavailableError(self.detail) from exc
        if start is None or start.closed:
            await self.unfollow(task_id, sink)
        return start

    async def _read_start(self, task_id: str) -> FollowStart | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self.key(task_id))
        pipe.hgetall(self.key(task_id, "frames"))
        pipe.get(self.key(task_id, "status"))
        pipe.exists(self.key(task_id, "closed"))
        snap, frames, status, closed = await pipe.execute()
        if not snap:
            return None
        return FollowStart(json.loads(snap), self._frames(frames), status.decode() if status else None, bool(closed))

    async def unfollow(self, task_id: str, sink: LiveSink) -> None:
        channel = self.key(task_id, "bus")
        async with self._sub_lock:
            current = self._followers.get(channel)
            if current is None or current[1] is not sink:
                return
            del self._followers[channel]
            self._resuming_sent.discard(task_id)
            self._confirmed.pop(channel, None)
            self._low_requested.pop(task_id, None)
            self._missing.discard(task_id)
            if self._pubsub is not None:
                with contextlib.suppress(*_ERRORS, TimeoutError):
                    await asyncio.wait_for(self._pubsub.unsubscribe(channel), self._timeout)

    async def _listener(self) -> None:
        """Deliver bus records to followers; resubscribe after an outage; watch the followed tasks' owners."""
        backoff = 0.1
        next_watch = time.monotonic() + self._owner_ms / 2000
        while not self._closing:
            try:
                if time.monotonic() >= next_watch:
                    next_watch = time.monotonic() + self._owner_ms / 2000
                    if self._followers:
                        await self._watch_owners()
                pubsub = self._pubsub
                if pubsub is None and self._followers:
                    pubsub = await self._resubscribe()
                if pubsub is None or not pubsub.subscribed:
                    self._listen_wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._listen_wake.wait(), 0.5)
                    continue
                msg = await pubsub.get_message(timeout=0.5)
                backoff = 0.1
                if msg is not None:
                    self._dispatch(msg)
            except _ERRORS as exc:
                self._down(exc)
                if self._pubsub is not None:
                    with contextlib.suppress(*_ERRORS):
                        await self._pubsub.aclose()
                    self._pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)

    async def _resubscribe(self) -> PubSub:
        async with self._sub_lock:
            pubsub = self._redis.pubsub()
            try:
                await asyncio.wait_for(pubsub.subscribe(*self._followers), self._timeout)
            except (*_ERRORS, TimeoutError):
                with contextlib.suppress(*_ERRORS):
                    await pubsub.aclose()
                raise
            self._pubsub = pubsub
            self._missing.clear()
            self._up()
            log.info("live state: resubscribed to %d task channel(s)", len(self._followers))
            return pubsub

    def _dispatch(self, msg: dict[str, Any]) -> None:
        channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else str(msg["channel"])
        if msg["type"] == "subscribe":
            ev = self._confirmed.get(channel)
            if ev is not None:
                ev.set()
            return
        if msg["type"] != "message":
            return
        follower = self._followers.get(channel)
        if follower is None:
            return
        try:
            event = decode_event(msg["data"])
        except ValueError:
            self.counters["bad_records"] += 1
            return
        self.counters["received"] += 1
        task_id, sink = follower
        sink(event)
        if isinstance(event, LiveClose):
            self._end_follow(task_id, sink)

    async def _watch_owners(self) -> None:
        """Close followers whose task ended unseen (missed close) or whose process went away."""
        followed = list(self._followers.values())
        pipe = self._redis.pipeline(transaction=False)
        for tid, _ in followed:
            pipe.exists(self.key(tid, "closed"))
            pipe.exists(self.key(tid, "alive"))
            pipe.exists(self.key(tid, "epoch"))
        results = await asyncio.wait_for(pipe.execute(), self._timeout)
        self._up()
        for (tid, sink), closed, alive, started in zip(
            followed, results[::3], results[1::3], results[2::3], strict=True
        ):
            # Acted on only when seen at two checks in a row: a close may still be on its way through the
            # channel behind the task's last messages, and a missing heartbeat may be a Redis that just
            # restarted empty. A queued task (scale-out: no worker took it yet) has no heartbeat to miss.
            suspect = bool(closed) or (not alive and (self._owner_lost == "close" or bool(started)))
            if not suspect:
                self._missing.discard(tid)
                self._resuming_sent.discard(tid)
                continue
            if tid not in self._missing:
                self._missing.add(tid)
                continue
            self._missing.discard(tid)
            if not closed and self._owner_lost == "resume":
                if tid not in self._resuming_sent:
                    self._resuming_sent.add(tid)
                    await self._tell_resuming(tid, sink)
                continue
            sink(LiveClose("" if closed else OWNER_GONE))
            self._end_follow(tid, sink)

    async def _tell_resuming(self, task_id: str, sink: LiveSink) -> None:
        """Scale-out: the worker stopped beating; the queue gives the task to another worker (or fails it, and
        then the close comes). Clients get the latest ``status_update`` with status ``RESUMING``."""
        raw = await asyncio.wait_for(self._redis.get(self.key(task_id, "status")), self._timeout)
        try:
            status: dict[str, Any] = json.loads(raw) if raw else {"type": "status_update", "task_id": task_id}
        except ValueError:
            status = {"type": "status_update", "task_id": task_id}
        status.update(
            status="RESUMING",
            current_step="resuming",
            details="the worker running this task stopped responding: another worker takes it over",
        )
        sink(LiveText(json.dumps(status), "status_update"))

    def _end_follow(self, task_id: str, sink: LiveSink) -> None:
        t = asyncio.get_running_loop().create_task(self.unfollow(task_id, sink))
        self._unfollowing.add(t)
        t.add_done_callback(self._unfollowing.discard)
