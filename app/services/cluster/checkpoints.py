"""A running task's resume point: metadata in a KV bucket, the pipeline state in the object store.

The metadata entry is written with compare-and-set on the revision this run last saw: a worker that took the
task over re-writes it once at the claim, so a stale worker's late checkpoint fails instead of overwriting the
newer one. The state object is named per epoch (``<task>.<epoch>``), so a stale write cannot replace it either.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from app.services.run_control import Checkpoint, LeaseLostError

log = logging.getLogger(__name__)


def _object_name(task_id: str, epoch: int) -> str:
    return f"{task_id}.{epoch}"


class CheckpointStore:
    def __init__(self, meta: KeyValue, objects: ObjectStore, task_id: str, epoch: int) -> None:
        self.meta = meta
        self.objects = objects
        self.task_id = task_id
        self.epoch = epoch
        self._revision = 0

    async def claim(self) -> Checkpoint | None:
        """The latest checkpoint of the task (None: start from the beginning), taken over by this epoch."""
        while True:
            try:
                entry = await self.meta.get(self.task_id)
            except KeyNotFoundError:
                entry = None
            if entry is None or not entry.value:
                try:
                    self._revision = await self.meta.create(self.task_id, json.dumps({"epoch": self.epoch}).encode())
                    return None
                except Exception as exc:  # created meanwhile by a competing claim: read again
                    log.debug("checkpoint create raced: %s", exc)
                    continue
            meta = json.loads(entry.value)
            checkpoint: Checkpoint | None = None
            if "frame" in meta:
                obj = await self.objects.get(_object_name(self.task_id, int(meta["epoch"])))
                state = obj.data or b""
                fields = {k: v for k, v in meta.items() if k not in ("epoch", "state_bytes")}
                checkpoint = Checkpoint(**fields, state=state)
            meta["epoch"] = self.epoch
            if checkpoint is not None:  # the state object under this epoch's name
                await self.objects.put(_object_name(self.task_id, self.epoch), checkpoint.state)
            try:
                self._revision = await self.meta.update(self.task_id, json.dumps(meta).encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                continue
            return checkpoint

    async def save(self, checkpoint: Checkpoint) -> None:
        await self.objects.put(_object_name(self.task_id, self.epoch), checkpoint.state)
        meta = {k: v for k, v in asdict(checkpoint).items() if k != "state"}
        meta.update(epoch=self.epoch, state_bytes=len(checkpoint.state))
        try:
            self._revision = await self.meta.update(self.task_id, json.dumps(meta).encode(), last=self._revision)
        except KeyWrongLastSequenceError:
            raise LeaseLostError("another worker took the task over (checkpoint revision moved)") from None

    async def discard(self) -> None:
        """The task ended: forget its checkpoint and every epoch's state object."""
        try:
            await self.meta.delete(self.task_id)
        except Exception as exc:
            log.warning("task %s: checkpoint not deleted: %s", self.task_id, exc)
        for epoch in range(1, self.epoch + 1):
            try:
                await self.objects.delete(_object_name(self.task_id, epoch))
            except Exception:
                continue

