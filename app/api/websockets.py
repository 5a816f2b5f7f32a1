"""``/ws/tracking/{task_id}``: a task's frames (binary) and tracking/status messages (JSON text).

Message order per global frame: one binary frame message per camera (see ``app.utils.wire``), then the
``tracking_update`` JSON, then ``frame_sync``. ``status_update`` arrives about once a second. When the task
ends the server sends a final ``status_update`` and closes with code 1000. An unknown task is closed with
code 4404. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.api.deps import get_context
from app.services.notifications import Subscriber
from app.services.task_manager import UnknownTaskError

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_UNKNOWN_TASK = 4404
CLOSE_TASK_ENDED = 1000


@router.websocket("/ws/tracking/{task_id}")
async def tracking_ws(websocket: WebSocket, task_id: str) -> None:
    ctx = get_context(websocket)
    await websocket.accept()
    try:
        ctx.tasks.get(task_id)
    except UnknownTaskError:
        await websocket.close(code=CLOSE_UNKNOWN_TASK, reason=f"processing task '{task_id}' not found")
        return
    sub = ctx.hub.subscribe(task_id)
    sender = asyncio.create_task(_send(websocket, sub))
    receiver = asyncio.create_task(_drain(websocket))
    try:
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ctx.hub.unsubscribe(task_id, sub)
        for t in (sender, receiver):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await t
    if sender in done and sender.exception() is None:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(code=CLOSE_TASK_ENDED, reason="task finished")


async def _send(websocket: WebSocket, sub: Subscriber) -> None:
    while True:
        msg = await sub.queue.get()
        if msg.kind == "close":
            return
        if msg.kind == "bytes":
            assert isinstance(msg.data, bytes)
            await websocket.send_bytes(msg.data)
        else:
            assert isinstance(msg.data, str)
            await websocket.send_text(msg.data)


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages so a disconnect is noticed at once."""
    while True:
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            return
