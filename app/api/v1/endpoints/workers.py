"""``GET /api/v1/workers``: the processes that run tasks, with their slots, load, GPU, models and heartbeat.

With scale-out, the cluster's workers from their heartbeats in NATS (a worker that missed three beats is
listed as not alive until its record expires); without it, this process, which runs the tasks itself.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from typing import Annotated

import psutil
from fastapi import APIRouter, Depends

from app.api.deps import AppContext, get_context
from app.api.v1.schemas import WorkerOut
from app.core.lifecycle import gpu_summary

router = APIRouter(prefix="/workers", tags=["workers"])
Ctx = Annotated[AppContext, Depends(get_context)]
STARTED = time.time()


@router.get("", response_model=list[WorkerOut])
async def list_workers(ctx: Ctx) -> list[WorkerOut]:
    board = ctx.tasks.board
    if board is None:
        return [_this_process(ctx)]
    now = time.time()
    period = ctx.settings.worker_heartbeat_s
    return [
        WorkerOut(
            worker_id=w.worker_id,
            host=w.host,
            pid=w.pid,
            slots=w.slots,
            running_tasks=w.running,
            load=round(len(w.running) / max(1, w.slots), 3),
            accepting=w.accepting,
            alive=now - w.heartbeat_ts <= 3 * period,
            device=w.device,
            models=w.models,
            gpu=w.gpu,
            task_gpu_mb=w.task_gpu_mb,
            cpu_percent=w.cpu_percent,
            started_at=datetime.fromtimestamp(w.started_ts, UTC),
            heartbeat_age_s=round(max(0.0, now - w.heartbeat_ts), 2),
            counters=w.counters,
        )
        for w in await board.workers()
    ]


def _this_process(ctx: AppContext) -> WorkerOut:
    running = [t.task_id for t in ctx.tasks.list() if not t.status.finished]
    slots = max(1, ctx.settings.max_concurrent_tasks)
    health = ctx.components.health
    det, emb = health.get("detector"), health.get("reid_embedder")
    models = {
        name: {"name": h.info.get("name"), "precision": h.info.get("precision"), "state": h.state.value}
        for name, h in (("detector", det), ("reid_embedder", emb))
        if h is not None
    }
    return WorkerOut(
        worker_id=f"{socket.gethostname()}-{os.getpid()}",
        host=socket.gethostname(),
        pid=os.getpid(),
        slots=slots,
        running_tasks=running,
        load=round(len(running) / slots, 3),
        accepting=ctx.components.essentials_ready(),
        alive=True,
        device=(det.device if det is not None else None) or "unknown",
        models=models,
        gpu=gpu_summary(),
        task_gpu_mb=None,
        cpu_percent=psutil.cpu_percent(interval=None),
        started_at=datetime.fromtimestamp(STARTED, UTC),
        heartbeat_age_s=0.0,
    )
