"""Writes history without ever holding up the pipeline: a bounded buffer, batched writes, a disk spool.

``add`` (on the event loop) only appends to the buffer; a background task writes batches of
``history_batch_size`` every ``history_flush_interval_s`` (or sooner when a batch is full). When a write fails
because the database is unreachable, that batch and every later one go to the disk spool, in sequence
order, until the database answers again; the spool is then replayed in order and direct writes resume. When
the buffer is full (the database is slow), the whole buffer is spooled at once instead of waiting.
Writes are idempotent (see ``repository``), so a batch written twice is stored once. ``dropped`` counts
records lost because even the spool could not be written (disk full): it stays 0 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from app.stores.history.records import IdentityEventRecord, Record, TaskRunRecord, TrackingEventRecord
from app.stores.history.repository import HistoryRepository
from app.stores.history.spool import DiskSpool, SpoolFile

if TYPE_CHECKING:
    from app.services.frame_processor import FrameResult
    from app.services.processing_task import TaskState

log = logging.getLogger(__name__)


@dataclass(slots=True, frozen=True)
class RecorderConfig:
    batch_size: int = 500
    flush_interval_s: float = 1.0
    buffer_size: int = 20_000
    retry_s: float = 1.0
    retry_max_s: float = 30.0
    write_timeout_s: float = 10.0
    migrate_schema: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.buffer_size < self.batch_size:
            raise ValueError("history: need 1 <= batch_size <= buffer_size")
        if min(self.flush_interval_s, self.retry_s, self.retry_max_s, self.write_timeout_s) <= 0:
            raise ValueError("history: intervals and timeouts must be > 0")


@dataclass(slots=True)
class RecorderCounters:
    """Records (tracking events, identity events, task-run updates) through the recorder."""

    produced: int = 0
    written: int = 0
    """Committed to the database (directly or from the spool)."""
    spooled: int = 0
    """Put on the disk spool (each record counted every time it is spooled)."""
    replayed: int = 0
    """Written from the spool."""
    dropped: int = 0
    """Lost: the spool itself could not be written."""
    rejected: int = 0
    """Refused by the database as invalid (not an outage): set aside under ``<spool>/rejected``."""


@dataclass(slots=True, frozen=True)
class RecorderReport:
    ok: bool
    detail: str
    info: dict[str, Any] = field(default_factory=dict)


def _is_invalid_data(exc: BaseException) -> bool:
    """A batch the database will never take (retrying it cannot help), as opposed to an outage: a data or
    integrity error (SQLSTATE classes 22 and 23, which asyncpg's errors carry)."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, DBAPIError):
        code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(code, str) and code[:2] in ("22", "23")
    return False


class HistoryRecorder:
    def __init__(self, repository: HistoryRepository, spool: DiskSpool, config: RecorderConfig | None = None) -> None:
        self.repository = repository
        self.spool = spool
        self.config = config or RecorderConfig()
        self.counters = RecorderCounters()
        self.on_report: Callable[[RecorderReport], None] | None = None
        self.schema = ""
        self._buffer: deque[Record] = deque()
        self._spool_events = 0
        self._spool_writes: set[asyncio.Task[None]] = set()
        self._spooling = False
        """Order: once a batch went to the spool, later ones follow it there until the spool is replayed."""
        self._prepared = False
        self._next_attempt = 0.0
        self._retry = self.config.retry_s
        self._last_error = ""
        self._wake = asyncio.Event()
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._inflight: tuple[int, list[Record]] | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.spool.open)
        pending = self.spool.pending()
        self._spool_events = sum(f.events for f in pending)
        self._spooling = bool(pending)
        await self._try_prepare()
        self._runner = asyncio.create_task(self._run(), name="history-recorder")
        self._report()

    async def stop(self, timeout: float = 15.0) -> None:
        """Write (or spool) everything buffered, then release the spool. What stays spooled is replayed by the
        next start."""
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            done, _ = await asyncio.wait({self._runner}, timeout=timeout)
            if not done:
                self._runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._runner
            elif (exc := self._runner.exception()) is not None:
                log.error("history recorder failed: %r", exc)
        if self._inflight is not None:  # cut off mid-write: it may or may not be committed; a replay is harmless
            await self._spool_now(*self._inflight)
            self._inflight = None
        if self._buffer:
            await self._spool_now(*self._take(len(self._buffer)))
        if self._spool_writes:
            await asyncio.wait(set(self._spool_writes))
        await asyncio.to_thread(self.spool.close)
        await self.repository.dispose()
        self._report()

    # -- producing (event loop; never blocks) ---------------------------------------------------
    def add(self, records: Sequence[Record]) -> None:
        if not records:
            return
        self.counters.produced += len(records)
        if self._stopping:  # a task outliving the server's shutdown: say so, never break the pipeline
            self.counters.dropped += len(records)
            log.error("history recorder stopped: %d records dropped", len(records))
            return
        if len(self._buffer) + len(records) > self.config.buffer_size:
            self._buffer.extend(records)
            seq, overflow = self._take(len(self._buffer))
            self._spooling = True
            log.warning("history buffer full: %d records spooled to disk", len(overflow))
            task = asyncio.create_task(self._spool_now(seq, overflow))
            self._spool_writes.add(task)
            task.add_done_callback(self._spool_writes.discard)
        else:
            self._buffer.extend(records)
            if len(self._buffer) >= self.config.batch_size:
                self._wake.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until every record added so far is committed to the database (or refused as invalid); False
        on timeout or while the database is unreachable (records then wait in the spool, on this machine)."""
        target = self.counters.produced
        deadline = time.monotonic() + timeout
        while self.counters.written + self.counters.rejected + self.counters.dropped < target:
            if self._spooling or self._stopping or time.monotonic() >= deadline:
                return False
            self._wake.set()
            await asyncio.sleep(0.02)
        return True

    def open_task(self, task: TaskState, epoch: int = 0) -> TaskHistory:
        history = TaskHistory(self, task, epoch)
        history.update(task)
        return history

    # -- the writer -----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self._stopping and len(self._buffer) < self.config.batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.config.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            if self._spooling:
                await self._spool_buffer()
                if time.monotonic() >= self._next_attempt or stopping:
                    await self._replay()
            else:
                await self._write_buffer()
            self._report()
            if stopping:
                return

    def _take(self, limit: int | None = None) -> tuple[int, list[Record]]:
        """The oldest buffered records and their sequence number (the spool keeps batches in this order)."""
        n = min(len(self._buffer), limit or self.config.batch_size)
        return self.spool.take_seq(), [self._buffer.popleft() for _ in range(n)]

    async def _write_buffer(self) -> None:
        while self._buffer and not self._spooling:
            seq, batch = self._take()
            self._inflight = (seq, batch)  # stays set if this task is cancelled: ``stop`` spools it
            try:
                await self._write(batch)
                self.counters.written += len(batch)
            except Exception as exc:
                if _is_invalid_data(exc):
                    await self._reject_batch(seq, batch, exc)
                else:
                    self._on_outage(exc)
                    await self._spool_now(seq, batch)
            self._inflight = None

    async def _spool_buffer(self) -> None:
        while self._buffer:
            await self._spool_now(*self._take())

    async def _spool_now(self, seq: int, batch: list[Record]) -> None:
        self._spooling = True
        try:
            await asyncio.to_thread(self.spool.write, seq, batch)
        except OSError as exc:
            self.counters.dropped += len(batch)
            log.error("history: %d records LOST, the spool could not be written: %s", len(batch), exc)
            return
        self.counters.spooled += len(batch)
        self._spool_events += len(batch)

    async def _replay(self) -> None:
        """Spooled batches in sequence order; back to direct writes when none is left."""
        if self._spool_writes:
            await asyncio.wait(set(self._spool_writes))
        for f in await asyncio.to_thread(self.spool.pending):
            try:
                records = await asyncio.to_thread(self.spool.read, f)
            except (OSError, ValueError) as exc:
                log.error("history: unreadable spool file %s set aside: %s", f.path.name, exc)
                await self._reject_file(f, f.events)
                continue
            try:
                await self._write(records)
            except Exception as exc:
                if _is_invalid_data(exc):
                    log.error("history: spooled batch %s refused by the database: %s", f.path.name, exc)
                    await self._reject_file(f, len(records))
                    continue
                self._on_outage(exc)
                return
            await asyncio.to_thread(self.spool.remove, f)
            self._spool_events -= f.events
            self.counters.written += len(records)
            self.counters.replayed += len(records)
        if not self._spool_writes and not self.spool.pending():
            self._spooling = False
            self._spool_events = 0
            log.info("history: spool replayed, writing directly again")

    async def _write(self, batch: list[Record]) -> None:
        if not self._prepared:
            await self._prepare()
        await asyncio.wait_for(self.repository.write(batch), timeout=self.config.write_timeout_s)
        self._retry = self.config.retry_s
        self._last_error = ""

    async def _prepare(self) -> None:
        self.schema = await asyncio.wait_for(
            self.repository.prepare(self.config.migrate_schema), timeout=max(60.0, self.config.write_timeout_s)
        )
        self._prepared = True
        log.info("history store %s ready: %s", self.repository.display_url, self.schema)

    async def _try_prepare(self) -> None:
        try:
            await self._prepare()
        except Exception as exc:
            self._on_outage(exc)
            self._spooling = True

    def _on_outage(self, exc: BaseException) -> None:
        detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        if detail != self._last_error:
            log.warning("history database unavailable (%s); spooling to %s", detail, self.spool.dir)
        self._last_error = detail
        self._next_attempt = time.monotonic() + self._retry
        self._retry = min(self._retry * 2, self.config.retry_max_s)

    async def _reject_batch(self, seq: int, batch: list[Record], exc: BaseException) -> None:
        log.error("history: batch of %d records refused by the database: %s", len(batch), exc)
        try:
            f = await asyncio.to_thread(self.spool.write, seq, batch)
        except OSError:
            self.counters.dropped += len(batch)
            return
        await self._reject_file(f, len(batch), counted=False)

    async def _reject_file(self, f: SpoolFile, records: int, counted: bool = True) -> None:
        await asyncio.to_thread(self.spool.reject, f)
        if counted:
            self._spool_events -= f.events
        self.counters.rejected += records

    # -- reporting ------------------------------------------------------------------------------
    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def spool_pending(self) -> int:
        return self._spool_events

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.repository.backend,
            "database": self.repository.display_url,
            "schema": self.schema,
            **asdict(self.counters),
            "buffered": self.buffered,
            "spool_pending": self.spool_pending,
            "spool_dir": str(self.spool.dir),
            "mode": "spooling" if self._spooling else "direct",
        }

    def _report(self) -> None:
        if self.on_report is None:
            return
        ok = not self._last_error
        detail = "" if ok else f"database unreachable, spooling to disk: {self._last_error}"
        self.on_report(RecorderReport(ok, detail, self.stats()))


class TaskHistory:
    """What one task hands the recorder: its run's state, and each processed frame with its identity events.

    Event time is the task's playback start (wall clock, UTC) plus the frame's video timestamp, so durations
    and buckets are video seconds whatever the processing speed or the frames skipped; ``sample_s`` is the
    video time since the task's previous processed frame, which each of its sightings stands for.
    """

    def __init__(self, recorder: HistoryRecorder, task: TaskState, epoch: int = 0) -> None:
        self.recorder = recorder
        self.epoch = epoch
        """Scale-out: every record carries it (fencing); 0 in the single-process server."""
        self.task_id = task.task_id
        self.environment_id = task.environment_id
        self.created_ts = task.created_at.timestamp()
        self.started_ts: float | None = None
        self._period = 0.0
        self._prev_video_ts: float | None = None
        self._seq = 0

    def started(self, task: TaskState, fps: float, started_ts: float | None = None) -> None:
        """Playback begins now (or at ``started_ts``); ``fps`` gives the first frame's sample length."""
        self.started_ts = time.time() if started_ts is None else started_ts
        self._period = 1.0 / fps if fps > 0 else 0.0
        self.update(task)

    @property
    def sequence(self) -> int:
        """Identity events recorded so far (a checkpoint keeps it)."""
        return self._seq

    def continue_sequence(self, seq: int) -> None:
        """A resumed run numbers its identity events after those of the run it continues."""
        self._seq = seq

    def frame(self, result: FrameResult) -> None:
        """The frame's tracks and identity events (``result.identity_events``)."""
        origin = self.created_ts if self.started_ts is None else self.started_ts
        video_ts = result.timestamp_video_s
        sample = self._period if self._prev_video_ts is None else max(0.0, video_ts - self._prev_video_ts)
        self._prev_video_ts = video_ts
        ts = origin + video_ts
        records: list[Record] = [
            TrackingEventRecord(
                ts=ts,
                task_id=self.task_id,
                environment_id=self.environment_id,
                camera_id=cam.camera_id,
                frame_index=cam.frame_index,
                track_id=t.track_id,
                global_id=t.global_id,
                x1=t.bbox_xyxy[0],
                y1=t.bbox_xyxy[1],
                x2=t.bbox_xyxy[2],
                y2=t.bbox_xyxy[3],
                confidence=t.confidence,
                map_x=None if t.map_coords is None else t.map_coords[0],
                map_y=None if t.map_coords is None else t.map_coords[1],
                video_ts_s=video_ts,
                sample_s=sample,
                epoch=self.epoch,
            )
            for cam in result.cameras
            for t in cam.tracks
        ]
        for ev in result.identity_events:
            self._seq += 1
            records.append(
                IdentityEventRecord(
                    ts=origin + ev.timestamp_s,
                    task_id=self.task_id,
                    environment_id=self.environment_id,
                    seq=self._seq,
                    event=ev.kind.value,
                    global_id=ev.global_id,
                    other_id=ev.merged_id,
                    camera_id=ev.camera_id,
                    track_id=ev.track_id,
                    score=ev.score,
                    video_ts_s=ev.timestamp_s,
                    epoch=self.epoch,
                )
            )
        self.recorder.add(records)

    def update(self, task: TaskState) -> None:
        """Record the task run's current state (status, counts; ended when the status is final)."""
        now = time.time()
        self.recorder.add(
            [
                TaskRunRecord(
                    task_id=self.task_id,
                    environment_id=self.environment_id,
                    camera_ids=tuple(task.camera_ids),
                    status=task.status.value,
                    created_ts=self.created_ts,
                    started_ts=self.started_ts,
                    ended_ts=now if task.status.finished else None,
                    updated_ts=now,
                    frames_processed=task.stats.frames_processed,
                    frames_skipped=task.stats.frames_skipped,
                    details=task.details[:2000],
                    epoch=self.epoch,
                )
            ]
        )
