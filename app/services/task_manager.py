"""Creates, runs, stops and lists processing tasks; at most ``max_concurrent_tasks`` run at once.

Tasks run in this process; ``find`` also reports a task that runs in another API process sharing the
live-state store (its status snapshot, see ``app.stores``). With a ``TaskBoard`` (scale-out, ``SPOTON_NATS_URL``)
nothing runs here: starts are queued for the cluster's workers, and find, list and stop cover the whole cluster.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING

from app.core.config import Settings
from app.core.lifecycle import Components
from app.services.environment_catalog import EnvironmentCatalog
from app.services.metrics import PipelineMetrics
from app.services.notifications import NotificationHub
from app.services.pipeline_orchestrator import PipelineOrchestrator
from app.services.processing_task import TaskState, TaskStatus
from app.services.video_data_manager import VideoDataManagerService
from app.stores.live_state import LiveStateStore
from app.stores.task_snapshot import snapshot_of, task_from_snapshot
from app.utils.loop_monitor import LoopLagMonitor

if TYPE_CHECKING:
    from app.services.cluster.task_board import TaskBoard
    from app.stores.history.recorder import HistoryRecorder

log = logging.getLogger(__name__)


class UnknownEnvironmentError(KeyError):
    pass


class UnknownCameraError(ValueError):
    pass


class UnknownTaskError(KeyError):
    pass


class TaskElsewhereError(RuntimeError):
    """The task runs in another API process without a shared queue (no ``SPOTON_NATS_URL``): stop it there."""


class TaskManager:
    def __init__(
        self,
        settings: Settings,
        catalog: EnvironmentCatalog,
        components: Components,
        hub: NotificationHub,
        loop_monitor: LoopLagMonitor | None = None,
        live: LiveStateStore | None = None,
        history: HistoryRecorder | None = None,
        metrics: PipelineMetrics | None = None,
        board: TaskBoard | None = None,
    ) -> None:
        self.settings = settings
        self.board = board
        """Scale-out: the cluster's task queue and records; None: tasks run in this process."""
        self.metrics = metrics
        self.history = history
        """Where tasks record their tracking history (None: not recorded)."""
        self.live = live
        """Where other API processes find this process's tasks (and this one theirs)."""
        self.catalog = catalog
        self.components = components
        self.hub = hub
        self.loop_monitor = loop_monitor
        self.videos = VideoDataManagerService(settings)
        """Shared by every task (and the media endpoint): one video cache, one download per object."""
        self._tasks: dict[str, TaskState] = {}
        self._runners: dict[str, PipelineOrchestrator] = {}
        self._handles: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max(1, settings.max_concurrent_tasks))

    async def start(self, environment_id: str, camera_ids: list[str] | None = None, owner: str = "") -> TaskState:
        """Start a task (queue it, with a board); once this returns, other API processes can find it (unless
        the store is down)."""
        env = self.catalog.get(environment_id)
        if env is None:
            raise UnknownEnvironmentError(environment_id)
        cams = list(camera_ids) if camera_ids else list(env.cameras)
        unknown = [c for c in cams if c not in env.cameras]
        if unknown:
            raise UnknownCameraError(f"environment '{environment_id}' has no camera(s) {', '.join(unknown)}")
        if len(set(cams)) != len(cams):
            raise UnknownCameraError("camera_ids has duplicates")
        if self.board is not None:
            queued = await self.board.submit(env.id, cams, owner)
            live = self.live
            if live is not None and live.health().connected and not await live.flush(self.settings.redis_timeout_s):
                log.warning("task %s: not yet visible to followers (live state store slow)", queued.task_id)
            return queued
        task = TaskState(task_id=uuid.uuid4().hex, environment_id=env.id, camera_ids=cams)
        self.hub.open_task(task.task_id)
        if self.live is not None:
            self.live.register_task(task.task_id, lambda: snapshot_of(task))
        runner = PipelineOrchestrator(
            task,
            env,
            self.components,
            self.hub,
            self.settings,
            videos=self.videos,
            loop_monitor=self.loop_monitor,
            history=self.history,
            metrics=self.metrics,
        )
        self._tasks[task.task_id] = task
        self._runners[task.task_id] = runner
        self._handles[task.task_id] = asyncio.create_task(self._run(runner), name=f"task-{task.task_id}")
        log.info("task %s started on %s cameras %s", task.task_id, env.id, cams)
        live = self.live
        if live is not None and live.health().connected and not await live.flush(self.settings.redis_timeout_s):
            log.warning("task %s: not yet visible to other API processes (live state store slow)", task.task_id)
        return task

    async def _run(self, runner: PipelineOrchestrator) -> None:
        try:
            async with self._slots:
                if runner.stop_requested.is_set():
                    runner.task.set(TaskStatus.STOPPED, "stopped", "stopped before it started")
                    self.hub.close_task(runner.task.task_id)
                    return
                await runner.run()
        finally:
            self._forget_finished()

    def _forget_finished(self) -> None:
        """Keep at most ``finished_tasks_kept`` ended tasks in memory (the oldest go first): a long-running
        server must not grow with every task it ever ran. Their history stays in the history store."""
        ended = sorted((t for t in self._tasks.values() if t.status.finished), key=lambda t: t.updated_at)
        for t in ended[: max(0, len(ended) - self.settings.finished_tasks_kept)]:
            self._tasks.pop(t.task_id, None)
            self._runners.pop(t.task_id, None)
            self._handles.pop(t.task_id, None)

    def get(self, task_id: str) -> TaskState:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise UnknownTaskError(task_id) from None

    def is_local(self, task_id: str) -> bool:
        return task_id in self._tasks

    async def find(self, task_id: str) -> TaskState:
        """The task, from this process or (as its latest snapshot) from the one that runs it.
        Raises ``UnknownTaskError``, or ``LiveStateUnavailableError`` when the store cannot be read."""
        if self.board is not None:
            from app.services.cluster.task_board import TaskNotInClusterError

            try:
                return await self.board.find(task_id)
            except TaskNotInClusterError:
                raise UnknownTaskError(task_id) from None
        local = self._tasks.get(task_id)
        if local is not None:
            return local
        snapshot = await self.live.get_task(task_id) if self.live is not None else None
        if snapshot is None:
            raise UnknownTaskError(task_id)
        try:
            return task_from_snapshot(snapshot)
        except ValueError:
            log.warning("task %s: unreadable snapshot in the live state store: %.200s", task_id, snapshot)
            raise UnknownTaskError(task_id) from None

    def runner(self, task_id: str) -> PipelineOrchestrator:
        self.get(task_id)
        return self._runners[task_id]

    def list(self) -> list[TaskState]:
        """Tasks run by this process (none with a board)."""
        return sorted(self._tasks.values(), key=lambda t: t.created_at, reverse=True)

    async def list_all(self) -> builtins.list[TaskState]:
        """Every task the API knows: the whole cluster's with a board, else this process's."""
        return await self.board.list_all() if self.board is not None else self.list()

    async def stop_anywhere(self, task_id: str) -> TaskState:
        """Stop a task run here or — with a board — anywhere in the cluster. ``UnknownTaskError`` when
        unknown; ``TaskElsewhereError`` when it runs in another single-process server."""
        if self.board is not None:
            from app.services.cluster.task_board import TaskNotInClusterError

            try:
                return await self.board.stop(task_id)
            except TaskNotInClusterError:
                raise UnknownTaskError(task_id) from None
        if not self.is_local(task_id):
            await self.find(task_id)
            raise TaskElsewhereError(task_id)
        return self.stop(task_id)

    def stop(self, task_id: str) -> TaskState:
        task = self.get(task_id)
        if not task.status.finished:
            self._runners[task_id].stop_requested.set()
            task.set(step="stopping")
        return task

    async def shutdown(self, timeout: float = 10.0) -> None:
        for tid in list(self._tasks):
            self.stop(tid)
        handles = [h for h in self._handles.values() if not h.done()]
        if handles:
            _, pending = await asyncio.wait(handles, timeout=timeout)
            for h in pending:
                h.cancel()
            for h in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await h
        await asyncio.to_thread(self.videos.close)
