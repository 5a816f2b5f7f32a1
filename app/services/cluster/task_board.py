"""The API side of the cluster: queue a task, find it, list the cluster's tasks, stop one from any node.

The task record in the KV bucket is the authority on placement (queued, running on which worker, re-queued,
final); the running worker's live snapshot in Redis adds its progress and figures. Stops go through the record
(compare-and-set) and, for a running task, a core-NATS message to its worker; the record's flag is the
fallback its lease thread reads. When JetStream gives up on a task (MaxDeliver), every API node hears the
advisory and one of them — the one whose compare-and-set wins — marks it FAILED and ends its stream.

JetStream notices an expired lease only when some worker asks for work, so the API nodes also watch the
workers' heartbeats: a task whose worker went silent is shown ``RESUMING`` (re-queued) at once, and one that
has used all its deliveries is failed without waiting for a worker to turn up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, NoKeysError

from app.services.cluster.jetstream import ClusterHandles, ClusterSettings, connect, ensure_cluster
from app.services.cluster.records import Placement, TaskRecord, WorkerRecord, change_record
from app.services.processing_task import TaskState, TaskStatus
from app.stores.live_state import LiveClose, LiveStateStore, LiveText
from app.stores.redis_live_state import redact
from app.stores.task_snapshot import snapshot_of, task_from_snapshot

log = logging.getLogger(__name__)
_FINAL = {Placement.COMPLETED: TaskStatus.COMPLETED, Placement.FAILED: TaskStatus.FAILED,
          Placement.STOPPED: TaskStatus.STOPPED}


SILENT = "stopped responding: waiting for another worker"


class TaskNotInClusterError(KeyError):
    pass


def _epoch(snapshot: dict[str, Any]) -> int:
    try:
        return int(snapshot.get("epoch") or 0)
    except (TypeError, ValueError):
        return 0


def _running_again(r: TaskRecord) -> bool:
    if r.placement is not Placement.REQUEUED or not r.details.endswith(SILENT):
        return False
    r.placement, r.details = Placement.RUNNING, ""
    return True


class TaskBoard:
    def __init__(self, cs: ClusterSettings, live: LiveStateStore) -> None:
        self.cs = cs
        self.live = live
        self._h: ClusterHandles | None = None
        self._janitor_task: asyncio.Task[None] | None = None

    @property
    def h(self) -> ClusterHandles:
        assert self._h is not None, "task board not started"
        return self._h

    async def start(self) -> None:
        nc = await connect(self.cs.url, "spoton-api")
        self._h = await ensure_cluster(nc, self.cs)
        await nc.subscribe(self.cs.names.max_deliveries_advisory(), cb=self._on_max_deliveries)
        self._janitor_task = asyncio.create_task(self._janitor(), name="cluster-janitor")

    async def close(self) -> None:
        if self._janitor_task is not None:
            self._janitor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor_task
        if self._h is not None:
            with contextlib.suppress(Exception):
                await self._h.nc.drain()

    def health(self) -> dict[str, Any]:
        nc = self._h.nc if self._h is not None else None
        return {
            "url": redact(self.cs.url),
            "stream": self.cs.names.stream,
            "connected": bool(nc is not None and nc.is_connected),
        }

    # -- tasks ----------------------------------------------------------------------------------
    async def submit(self, environment_id: str, camera_ids: list[str], owner: str) -> TaskState:
        """Queue a task; a worker with a free slot takes it. Returns it QUEUED."""
        task_id = uuid.uuid4().hex
        record = TaskRecord(task_id, environment_id, list(camera_ids), time.time(), owner=owner)
        await self.h.tasks.create(task_id, record.to_json())
        # The message id makes a retried publish (a lost reply) queue the task once.
        ack = await self.h.js.publish(
            self.cs.names.start_subject, json.dumps({"task_id": task_id}).encode(), headers={"Nats-Msg-Id": task_id}
        )

        def numbered(r: TaskRecord) -> bool:
            r.queue_seq = ack.seq
            return True

        record = await self._change(task_id, numbered) or record
        task = self._state(record, None)
        self.live.announce_task(task_id, snapshot_of(task))
        return task

    async def record(self, task_id: str) -> TaskRecord:
        try:
            entry = await self.h.tasks.get(task_id)
        except KeyNotFoundError:
            raise TaskNotInClusterError(task_id) from None
        return TaskRecord.from_json(entry.value or b"{}")

    async def find(self, task_id: str) -> TaskState:
        record = await self.record(task_id)
        snapshot = await self.live.get_task(task_id) if record.placement is not Placement.QUEUED else None
        position = await self._queue_position(record) if record.placement is Placement.QUEUED else None
        return self._state(record, snapshot, position)

    async def list_all(self) -> list[TaskState]:
        records = await self._records()
        waiting = sorted((r for r in records if r.placement is Placement.QUEUED), key=lambda r: r.queue_seq)
        positions = {r.task_id: i + 1 for i, r in enumerate(waiting)}
        snapshots = await asyncio.gather(
            *(self.live.get_task(r.task_id) for r in records if r.placement is not Placement.QUEUED)
        )
        by_id = dict(zip((r.task_id for r in records if r.placement is not Placement.QUEUED), snapshots, strict=True))
        tasks = [self._state(r, by_id.get(r.task_id), positions.get(r.task_id)) for r in records]
        return sorted(tasks, key=lambda t: t.created_at, reverse=True)

    async def stop(self, task_id: str) -> TaskState:
        """Stop a task wherever it is: queued or re-queued ones end here at once; a running one is asked."""

        def request(r: TaskRecord) -> bool:
            if r.placement.finished:
                return False
            r.stop_requested = True
            if r.placement in (Placement.QUEUED, Placement.REQUEUED):
                r.placement, r.details = Placement.STOPPED, "stopped before a worker took it"
                r.epoch += 1  # fences a worker that may still hold a re-queued task's old lease
            return True

        record = await self._change(task_id, request)
        if record is None:
            return await self.find(task_id)
        if record.placement is Placement.STOPPED:
            with contextlib.suppress(Exception):  # gone from the queue now (a worker would terminate it anyway)
                await self.h.js.delete_msg(self.cs.names.stream, record.queue_seq)
            self._end_stream(record, TaskStatus.STOPPED)
        else:
            await self.h.nc.publish(self.cs.names.stop_subject(task_id), b"")
        return await self.find(task_id)

    async def workers(self) -> list[WorkerRecord]:
        try:
            keys = await self.h.workers.keys()
        except NoKeysError:
            return []
        out: list[WorkerRecord] = []
        for k in keys:
            with contextlib.suppress(KeyNotFoundError, ValueError, TypeError):
                entry = await self.h.workers.get(k)
                if entry.value:
                    out.append(WorkerRecord.from_json(entry.value))
        return sorted(out, key=lambda w: w.worker_id)

    # -- helpers --------------------------------------------------------------------------------
    async def _records(self) -> list[TaskRecord]:
        try:
            keys = await self.h.tasks.keys()
        except NoKeysError:
            return []
        entries = await asyncio.gather(*(self.h.tasks.get(k) for k in keys), return_exceptions=True)
        out: list[TaskRecord] = []
        for e in entries:
            if isinstance(e, BaseException) or not e.value:
                continue
            with contextlib.suppress(ValueError, TypeError):
                out.append(TaskRecord.from_json(e.value))
        return out

    async def _queue_position(self, record: TaskRecord) -> int:
        waiting = [r for r in await self._records() if r.placement is Placement.QUEUED]
        return 1 + sum(1 for r in waiting if r.queue_seq < record.queue_seq)

    async def _change(self, task_id: str, change: Callable[[TaskRecord], bool]) -> TaskRecord | None:
        """Compare-and-set; None when ``change`` declined (returned False)."""
        try:
            return await change_record(self.h.tasks, task_id, change)
        except KeyNotFoundError:
            raise TaskNotInClusterError(task_id) from None

    def _state(self, record: TaskRecord, snapshot: dict[str, Any] | None, position: int | None = None) -> TaskState:
        task: TaskState | None = None
        if snapshot is not None:
            with contextlib.suppress(ValueError):
                task = task_from_snapshot(snapshot)
        if task is None:
            task = TaskState(
                task_id=record.task_id,
                environment_id=record.environment_id,
                camera_ids=list(record.camera_ids),
                created_at=datetime.fromtimestamp(record.created_ts, UTC),
                updated_at=datetime.fromtimestamp(record.updated_ts, UTC),
            )
        task.extra["owner"] = record.owner
        task.worker_id, task.epoch, task.resumed_from_frame = record.worker_id, record.epoch, record.resumed_from_frame
        task.queue_position = position
        if record.placement is Placement.QUEUED:
            task.set(TaskStatus.QUEUED, "queued", f"waiting for a worker (position {position})" if position else None)
        elif record.placement is Placement.REQUEUED:
            task.set(TaskStatus.RESUMING, "resuming", record.details)
        elif record.placement is Placement.RUNNING and (snapshot is None or _epoch(snapshot) < record.epoch):
            # the worker that took it has not published yet (the snapshot, if any, is the previous run's)
            if record.epoch > 1:
                task.set(TaskStatus.RESUMING, "resuming", f"worker {record.worker_id} takes it over")
            else:
                task.set(TaskStatus.INITIALIZING, "starting", f"taken by worker {record.worker_id}")
        elif record.placement.finished and task.status is not _FINAL[record.placement]:
            task.set(_FINAL[record.placement], record.placement.value.lower(), record.details or None)
        return task

    def _end_stream(self, record: TaskRecord, status: TaskStatus) -> None:
        """Final status and close for the task's followers, on behalf of a worker that is not there."""
        task = self._state(record, None)
        task.set(status, status.value.lower(), record.details)
        self.live.register_task(record.task_id, lambda: snapshot_of(task), record.epoch)
        message = {
            "type": "status_update", "task_id": record.task_id, "status": status.value, "progress": task.progress,
            "current_step": task.current_step, "details": task.details, "worker_id": record.worker_id,
            "epoch": record.epoch, "resumed_from_frame": record.resumed_from_frame,
        }
        self.live.publish(record.task_id, LiveText(json.dumps(message), "status_update", message))
        self.live.publish(record.task_id, LiveClose())

    async def _janitor(self) -> None:
        period = max(1.0, self.cs.lease_s / 2)
        while True:
            await asyncio.sleep(period)
            try:
                await self.sweep()
            except Exception as exc:  # NATS reconnecting: next round
                log.debug("cluster janitor: %s", exc)

    async def sweep(self) -> None:
        """Re-queue (in the records) tasks whose worker went silent; fail those out of deliveries."""
        silent_after = max(3 * self.cs.heartbeat_s, self.cs.lease_s)
        now = time.time()
        alive = {w.worker_id for w in await self.workers() if now - w.heartbeat_ts <= silent_after}
        for record in await self._records():
            if record.placement is Placement.REQUEUED and record.worker_id in alive and record.details.endswith(SILENT):
                await self._change(record.task_id, _running_again)  # it was only slow: it still holds the lease
                continue
            if record.placement is not Placement.RUNNING or record.worker_id in alive:
                continue
            lost, out_of_deliveries = record.worker_id, record.epoch >= self.cs.max_deliver

            def mark(r: TaskRecord, lost: str | None = lost, final: bool = out_of_deliveries) -> bool:
                if r.placement is not Placement.RUNNING or r.worker_id != lost:
                    return False  # taken over or ended meanwhile
                if final:
                    r.placement, r.epoch = Placement.FAILED, r.epoch + 1
                    r.details = f"gave up after {r.epoch - 1} deliveries: worker {lost} was lost"
                else:
                    r.placement = Placement.REQUEUED
                    r.details = f"worker {lost} {SILENT}"
                return True

            changed = await self._change(record.task_id, mark)
            if changed is None:
                continue
            log.warning("task %s: %s", record.task_id, changed.details)
            if changed.placement is Placement.FAILED:
                with contextlib.suppress(Exception):
                    await self.h.js.delete_msg(self.cs.names.stream, changed.queue_seq)
                self._end_stream(changed, TaskStatus.FAILED)

    async def _on_max_deliveries(self, msg: Msg) -> None:
        try:
            seq = int(json.loads(msg.data)["stream_seq"])
            stored = await self.h.js.get_msg(self.cs.names.stream, seq)
            task_id = str(json.loads(stored.data or b"{}")["task_id"])
        except Exception as exc:
            log.warning("max-deliveries advisory not understood: %s", exc)
            return
        deliveries = self.cs.max_deliver

        def give_up(r: TaskRecord) -> bool:
            if r.placement.finished:
                return False
            r.placement = Placement.FAILED
            r.details = (
                f"gave up after {deliveries} deliveries: the workers running it were lost or handed it back "
                f"(last: worker {r.worker_id})"
            )
            r.epoch += 1
            return True

        try:
            record = await self._change(task_id, give_up)
        except TaskNotInClusterError:
            return
        if record is not None:  # this node won: it ends the stream and clears the queue
            log.error("task %s: %s", task_id, record.details)
            with contextlib.suppress(Exception):
                await self.h.js.delete_msg(self.cs.names.stream, seq)
            self._end_stream(record, TaskStatus.FAILED)
