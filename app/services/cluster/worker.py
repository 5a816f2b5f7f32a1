"""``spoton worker``: pulls tasks from the JetStream queue when it has room, runs them, and keeps them safe.

Placement: a worker asks for one task at a time and only with a free slot (``worker_slots``) and, on GPU,
the free memory one more task needs (measured at warm-up). The message stays unacknowledged while the task
runs: its lease (``TaskLease``) is renewed from a thread; the task record in KV names this worker and its
epoch. On the way out:

* completed, failed or stopped → record final, checkpoint deleted, message acknowledged;
* SIGTERM → every task checkpoints at its next frame and is handed back (``nak``: redelivered at once);
* lease lost (frozen, cut off) → the run stops publishing at once and leaves everything as it is: the
  worker that took the task over owns it now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psutil
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from app.core.config import Settings
from app.core.lifecycle import Components, gpu_summary
from app.services.cluster.checkpoints import CheckpointStore
from app.services.cluster.jetstream import ClusterHandles, ClusterSettings, connect, ensure_cluster
from app.services.cluster.lease import TaskLease
from app.services.cluster.records import Placement, RecordChangedError, TaskRecord, WorkerRecord, change_record
from app.services.environment_catalog import EnvironmentCatalog
from app.services.metrics import PipelineMetrics
from app.services.notifications import NotificationHub
from app.services.pipeline_orchestrator import PipelineOrchestrator
from app.services.processing_task import TaskState, TaskStatus
from app.services.run_control import Checkpoint
from app.services.video_data_manager import VideoDataManagerService
from app.stores.history.recorder import HistoryRecorder
from app.stores.history.records import TaskRunRecord
from app.stores.live_state import LiveStateStore
from app.stores.task_snapshot import snapshot_of
from app.utils.loop_monitor import LoopLagMonitor

log = logging.getLogger(__name__)
HAND_BACK_TIMEOUT_S = 20.0
"""SIGTERM: how long a task may take to reach its next frame and checkpoint before it is handed back as is."""


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class _Control:
    """``RunControl`` of one run on this worker."""

    epoch: int
    checkpoint_interval_s: float
    resume: Checkpoint | None
    lease: TaskLease
    store: CheckpointStore
    hand_back: asyncio.Event = field(default_factory=asyncio.Event)

    def holds_lease(self) -> bool:
        return self.lease.held()

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        await self.store.save(checkpoint)


@dataclass(slots=True)
class _Run:
    task: TaskState
    runner: PipelineOrchestrator
    control: _Control
    handle: asyncio.Task[None] | None = None


class ClusterWorker:
    def __init__(
        self,
        settings: Settings,
        catalog: EnvironmentCatalog,
        components: Components,
        hub: NotificationHub,
        live: LiveStateStore,
        history: HistoryRecorder | None = None,
        metrics: PipelineMetrics | None = None,
        loop_monitor: LoopLagMonitor | None = None,
    ) -> None:
        self.settings = settings
        self.cs = ClusterSettings.from_settings(settings)
        self.id = settings.worker_id or default_worker_id()
        self.slots = settings.worker_slots
        self.catalog = catalog
        self.components = components
        self.hub = hub
        self.live = live
        self.history = history
        self.metrics = metrics
        self.loop_monitor = loop_monitor
        self.videos = VideoDataManagerService(settings)
        self.runs: dict[str, _Run] = {}
        self.started_ts = time.time()
        self.task_gpu_mb: float | None = None
        self.accepting = False
        self._h: ClusterHandles | None = None
        self._closing = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self.counters = {"taken": 0, "completed": 0, "handed_back": 0, "lost": 0, "resumed": 0}

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        nc = await connect(self.cs.url, f"spoton-worker-{self.id}")
        self._h = await ensure_cluster(nc, self.cs)
        await nc.subscribe(self.cs.names.stop_subject(), cb=self._on_stop_message)
        self._loops = [
            asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat"),
            asyncio.create_task(self._pull_loop(), name="worker-pull"),
        ]
        log.info("worker %s: %d slot(s), queue %s on %s", self.id, self.slots, self.cs.names.stream, self.cs.url)

    async def stop(self) -> None:
        """Stop taking tasks, hand every running task back after a checkpoint, leave the cluster."""
        self._closing.set()
        self.accepting = False
        for run in self.runs.values():
            run.control.hand_back.set()
        handles = [r.handle for r in self.runs.values() if r.handle is not None and not r.handle.done()]
        if handles:
            _, pending = await asyncio.wait(handles, timeout=HAND_BACK_TIMEOUT_S)
            for h in pending:
                h.cancel()
            for h in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await h
        for t in self._loops:
            t.cancel()
        for t in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._h is not None:
            with contextlib.suppress(Exception):
                await self._h.workers.delete(self.id)
            with contextlib.suppress(Exception):
                await self._h.nc.drain()
        await asyncio.to_thread(self.videos.close)

    @property
    def connected(self) -> bool:
        """NATS is connected (False while it reconnects, or before ``start``)."""
        return self._h is not None and self._h.nc.is_connected

    @property
    def h(self) -> ClusterHandles:
        assert self._h is not None, "worker not started"
        return self._h

    # -- placement ------------------------------------------------------------------------------
    def has_room(self) -> bool:
        if not self.accepting or len(self.runs) >= self.slots:
            return False
        if self.task_gpu_mb is None:
            return True
        gpu = gpu_summary()
        return bool(gpu.get("available")) and float(gpu.get("memory_free_mb", 0.0)) >= self.task_gpu_mb

    async def _pull_loop(self) -> None:
        await self.components.wait_loaded()
        if not self.components.essentials_ready():
            failed = "; ".join(f"{h.name}: {h.detail}" for h in self.components.health.values() if h.detail)
            log.error("worker %s: models not available, taking no tasks: %s", self.id, failed)
            return
        self.task_gpu_mb = await asyncio.to_thread(measure_task_gpu_mb, self.components)
        self.accepting = True
        self._beat_now.set()
        sub = await self.h.js.pull_subscribe_bind(self.cs.names.consumer, stream=self.cs.names.stream)
        while not self._closing.is_set():
            if not self.has_room():
                await asyncio.sleep(0.2)
                continue
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception as exc:  # NATS reconnecting: try again shortly
                log.warning("worker %s: fetch failed: %s", self.id, exc)
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                if self._closing.is_set():
                    await msg.nak()
                    continue
                await self._take(msg)

    async def _take(self, msg: Msg) -> None:
        try:
            task_id = str(json.loads(msg.data)["task_id"])
        except (ValueError, KeyError, TypeError):
            log.error("worker %s: unreadable task message %.200r: terminated", self.id, msg.data)
            await msg.term()
            return
        claimed = await self._claim(task_id, msg)
        if claimed is None:
            return
        record, epoch = claimed
        lease = TaskLease(
            self.cs.url, msg.reply, self.cs.lease_s, self.cs.names.tasks_bucket, task_id, epoch,
            on_stop_requested=self._stop_soon(task_id),
        )
        lease.start()
        store = CheckpointStore(self.h.checkpoints, self.h.state, task_id, epoch)
        try:
            resume = await store.claim()
            if self.history is not None:
                await self._fence_history(record, epoch, resume)
        except Exception as exc:
            log.error("task %s: could not take it over (%s): handed back", task_id, exc)
            lease.close()
            await msg.nak(delay=2.0)
            return
        if resume is not None:
            frame = resume.frame

            def resumed(r: TaskRecord) -> bool:
                r.resumed_from_frame = frame
                return r.epoch == epoch

            await self._update(task_id, resumed)
            self.counters["resumed"] += 1
        self.counters["taken"] += 1
        task = TaskState(
            task_id=task_id,
            environment_id=record.environment_id,
            camera_ids=list(record.camera_ids),
            created_at=datetime.fromtimestamp(record.created_ts, UTC),
            worker_id=self.id,
            epoch=epoch,
            resumed_from_frame=None if resume is None else resume.frame,
        )
        task.extra["owner"] = record.owner
        env = self.catalog.get(record.environment_id)
        control = _Control(epoch, self.settings.checkpoint_interval_s, resume, lease, store)
        if env is None:
            reason = f"environment '{record.environment_id}' is not known to worker {self.id}"
            task.set(TaskStatus.FAILED, "failed", reason)
            await self._finish(msg, task, lease, store)
            return
        self.hub.open_task(task_id)
        self.live.register_task(task_id, lambda: snapshot_of(task), epoch)
        runner = PipelineOrchestrator(
            task, env, self.components, self.hub, self.settings, videos=self.videos, loop_monitor=self.loop_monitor,
            history=self.history, metrics=self.metrics, control=control,
        )
        run = _Run(task, runner, control)
        self.runs[task_id] = run
        self._beat_now.set()
        if self._closing.is_set():
            control.hand_back.set()
        run.handle = asyncio.create_task(self._run(msg, run), name=f"task-{task_id}")

    async def _claim(self, task_id: str, msg: Msg) -> tuple[TaskRecord, int] | None:
        """Raise the task's epoch and name this worker in its record; None when it is not to be run."""
        for _ in range(10):
            try:
                entry = await self.h.tasks.get(task_id)
            except KeyNotFoundError:
                log.warning("task %s: no record (expired?): terminated", task_id)
                await msg.term()
                return None
            record = TaskRecord.from_json(entry.value or b"{}")
            if record.placement.finished:
                await msg.term()
                return None
            if record.stop_requested:
                record.placement, record.details = Placement.STOPPED, "stopped before a worker took it"
                record.updated_ts = time.time()
                try:
                    await self.h.tasks.update(task_id, record.to_json(), last=entry.revision)
                except KeyWrongLastSequenceError:
                    continue
                await msg.term()
                return None
            record.epoch += 1
            record.placement, record.worker_id, record.updated_ts = Placement.RUNNING, self.id, time.time()
            record.details = ""
            try:
                await self.h.tasks.update(task_id, record.to_json(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            log.info("task %s: taken by %s (epoch %d, delivery %d)", task_id, self.id, record.epoch,
                     msg.metadata.num_delivered)
            return record, record.epoch
        log.error("task %s: record kept changing; handed back", task_id)
        await msg.nak(delay=1.0)
        return None

    async def _fence_history(self, record: TaskRecord, epoch: int, resume: Checkpoint | None) -> None:
        assert self.history is not None
        run = TaskRunRecord(
            task_id=record.task_id, environment_id=record.environment_id, camera_ids=tuple(record.camera_ids),
            status=TaskStatus.INITIALIZING.value, created_ts=record.created_ts,
            started_ts=None if resume is None else resume.playback_started_ts, ended_ts=None, updated_ts=time.time(),
            frames_processed=0 if resume is None else resume.frames_processed,
            frames_skipped=0 if resume is None else resume.frames_skipped, epoch=epoch,
        )
        after = None if resume is None else resume.video_ts_s
        await asyncio.wait_for(self.history.repository.fence_task(run, after), timeout=self.cs.lease_s)

    async def _run(self, msg: Msg, run: _Run) -> None:
        task_id = run.task.task_id
        try:
            await run.runner.run()
        except asyncio.CancelledError:  # shutdown gave up waiting for its checkpoint: back to the queue as is
            if run.runner.outcome == "handed_back" and run.control.lease.held():
                with contextlib.suppress(Exception):
                    await msg.nak()
            run.control.lease.close()
            raise
        finally:
            self.runs.pop(task_id, None)
            self._beat_now.set()
        outcome = run.runner.outcome
        if outcome != "lease_lost" and not run.control.lease.held():
            # it ended (or was handed back) just as the lease ran out: another worker may hold the message now,
            # and an ack, nak or checkpoint delete from here would act on that worker's run
            outcome = "lease_lost"
        if outcome == "lease_lost":
            self.counters["lost"] += 1
            run.control.lease.close()
            return
        if outcome == "handed_back":
            self.counters["handed_back"] += 1
            epoch = run.control.epoch
            await self._update(task_id, lambda r: r.epoch == epoch and _requeue(r, self.id))
            run.control.lease.close()
            await msg.nak()
            log.info("task %s: handed back after frame %s", task_id, run.task.stats.frames_processed)
            return
        await self._finish(msg, run.task, run.control.lease, run.control.store)

    async def _finish(self, msg: Msg, task: TaskState, lease: TaskLease, store: CheckpointStore) -> None:
        placement = {
            TaskStatus.COMPLETED: Placement.COMPLETED,
            TaskStatus.STOPPED: Placement.STOPPED,
        }.get(task.status, Placement.FAILED)
        epoch = task.epoch

        def final(r: TaskRecord) -> bool:
            r.placement, r.details = placement, task.details
            return r.epoch == epoch

        await self._update(task.task_id, final)
        await store.discard()
        lease.close()
        with contextlib.suppress(Exception):
            await msg.ack_sync(timeout=5.0)
        self.counters["completed"] += 1

    async def _update(self, task_id: str, change: Callable[[TaskRecord], bool]) -> None:
        """Compare-and-set ``change`` into the task record (re-read on conflict); a gone record is left gone."""
        try:
            await change_record(self.h.tasks, task_id, change)
        except (KeyNotFoundError, RecordChangedError) as exc:
            log.error("task %s: record not updated: %s", task_id, exc)

    # -- stop requests --------------------------------------------------------------------------
    def _stop_soon(self, task_id: str) -> Callable[[], None]:
        loop = asyncio.get_running_loop()

        def request() -> None:  # from the lease thread
            loop.call_soon_threadsafe(self._stop_task, task_id)

        return request

    def _stop_task(self, task_id: str) -> None:
        run = self.runs.get(task_id)
        if run is not None and not run.runner.stop_requested.is_set():
            log.info("task %s: stop requested", task_id)
            run.runner.stop_requested.set()
            run.task.set(step="stopping")

    async def _on_stop_message(self, msg: Msg) -> None:
        self._stop_task(msg.subject.rsplit(".", 1)[-1])

    # -- heartbeat ------------------------------------------------------------------------------
    def record(self) -> WorkerRecord:
        det = self.components.health["detector"]
        emb = self.components.health["reid_embedder"]
        return WorkerRecord(
            worker_id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            slots=self.slots,
            running=sorted(self.runs),
            device=det.device or "unknown",
            models={
                "detector": {k: det.info.get(k) for k in ("name", "precision")} | {"state": det.state.value},
                "reid_embedder": {k: emb.info.get(k) for k in ("name", "precision")} | {"state": emb.state.value},
            },
            gpu=gpu_summary(),
            cpu_percent=psutil.cpu_percent(interval=None),
            started_ts=self.started_ts,
            heartbeat_ts=time.time(),
            accepting=self.accepting and not self._closing.is_set(),
            task_gpu_mb=self.task_gpu_mb,
            counters=dict(self.counters),
        )

    async def _heartbeat_loop(self) -> None:
        """Every ``worker_heartbeat_s``, and at once when the worker takes or ends a task."""
        while True:
            self._beat_now.clear()
            try:
                await self.h.workers.put(self.id, self.record().to_json())
            except Exception as exc:
                log.warning("worker %s: heartbeat failed: %s", self.id, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.cs.heartbeat_s)


def _requeue(r: TaskRecord, worker_id: str) -> bool:
    r.placement = Placement.REQUEUED
    r.details = f"handed back by worker {worker_id} (shutting down): waiting for another worker"
    return True


def measure_task_gpu_mb(components: Components) -> float | None:
    """GPU memory one more task needs: the peak above the loaded models while the detector and embedder
    run a batch of four full-HD frames (one task's cameras), plus 20 % headroom. None off the GPU."""
    det = components.detector
    if det is None or not str(det.info.device).startswith("cuda"):
        return None
    import numpy as np
    import torch

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    frames = [np.zeros((1080, 1920, 3), np.uint8) for _ in range(4)]
    det.detect(frames)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return round((peak - base) / 2**20 * 1.2, 1)

