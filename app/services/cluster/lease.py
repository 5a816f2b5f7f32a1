"""A running task's lease, renewed from a thread of its own.

JetStream redelivers a task whose message is not acknowledged within the ack wait (``task_lease_s``). A
worker renews it with ``+WPI`` (work in progress) on the message's reply subject every third of the lease, from
this thread, over its own connection and event loop: a busy or blocked main loop (a long model call, a stall)
must not cost the task. Each renewal also reads the task record: a higher epoch there means another worker
took the task (this one was frozen past its lease): the lease is then *lost* for good.

``held()`` is what the pipeline asks before publishing a frame or writing history: it is False once the
last confirmed renewal is older than the lease minus a margin — so a worker thawed after SIGSTOP fences
itself on its first check, before its renewal thread has even run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable

from nats.aio.client import Client

from app.services.cluster.jetstream import connect
from app.services.cluster.records import TaskRecord

log = logging.getLogger(__name__)
MARGIN = 0.25
"""Share of the lease kept as safety margin: the lease counts as lost this much before the server's expiry."""


class TaskLease:
    def __init__(
        self,
        url: str,
        ack_subject: str,
        lease_s: float,
        tasks_bucket: str,
        task_id: str,
        epoch: int,
        on_stop_requested: Callable[[], None],
    ) -> None:
        self.url = url
        self.ack_subject = ack_subject
        self.lease_s = lease_s
        self.bucket = tasks_bucket
        self.task_id = task_id
        self.epoch = epoch
        self._on_stop = on_stop_requested
        self._renewed_at = time.monotonic()
        """The message was (re)delivered just now: the lease starts held."""
        self._lost = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name=f"lease-{task_id[:8]}", daemon=True)
        self.renewals = 0

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop renewing (the task was acked, handed back or abandoned)."""
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)  # it wakes at once; a slow NATS close is left to the daemon thread

    def held(self) -> bool:
        with self._lock:
            if not self._lost and time.monotonic() - self._renewed_at > self.lease_s * (1 - MARGIN):
                self._lose(f"no confirmed lease renewal for {time.monotonic() - self._renewed_at:.1f} s")
            return not self._lost

    @property
    def lost_reason(self) -> str:
        return self._lost

    def _lose(self, reason: str) -> None:
        if not self._lost:
            self._lost = reason
            log.warning("task %s: lease lost (epoch %d): %s", self.task_id, self.epoch, reason)

    # -- the thread ---------------------------------------------------------------------------------
    def _main(self) -> None:
        asyncio.run(self._renew_loop())

    async def _renew_loop(self) -> None:
        nc: Client | None = None
        try:
            nc = await connect(self.url, f"lease-{self.task_id}")
            kv = await nc.jetstream().key_value(self.bucket)
            period = self.lease_s / 3
            while not self._stop.is_set():
                sent_at = time.monotonic()
                try:
                    await nc.publish(self.ack_subject, b"+WPI")
                    await nc.flush(timeout=max(1, int(period)))
                    entry = await kv.get(self.task_id)
                except Exception as exc:  # NATS away: the lease runs out unless it comes back in time
                    log.warning("task %s: lease renewal failed: %s", self.task_id, exc)
                else:
                    record = TaskRecord.from_json(entry.value or b"{}")
                    with self._lock:
                        if record.epoch != self.epoch:
                            self._lose(f"task taken over by {record.worker_id} (epoch {record.epoch})")
                            return
                        if time.monotonic() - self._renewed_at > self.lease_s * (1 - MARGIN):
                            self._lose("lease renewal came too late (the process was stalled)")
                        elif not self._lost:
                            self._renewed_at = sent_at
                            self.renewals += 1
                    if record.stop_requested:
                        self._on_stop()
                if self._lost:
                    return
                await asyncio.to_thread(self._stop.wait, max(0.0, period - (time.monotonic() - sent_at)))
        except Exception as exc:
            with self._lock:
                self._lose(f"lease thread failed: {type(exc).__name__}: {exc}")
        finally:
            if nc is not None:
                with contextlib.suppress(Exception):
                    await nc.close()
