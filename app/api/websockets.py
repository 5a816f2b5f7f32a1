"""``/ws/tracking/{task_id}``: a task's frames (binary) and tracking/status messages (JSON text).

Message order per global frame: one binary frame message per camera (see ``app.utils.wire``), then the
``tracking_update`` JSON, then ``frame_sync``; ``status_update`` about once a second. Each client has its own
outbox (``app.services.notifications``), so a slow client never slows the pipeline or other clients. Close
codes are listed in docs/protocol.md.

A task that runs in another API process (same live-state store, ``SPOTON_REDIS_URL``) streams here too: the
hub follows it through the store. If that process stops responding, its clients here are closed with 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.api.auth import CLOSE_FORBIDDEN, authenticate_websocket, origin_allowed
from app.api.deps import AppContext, get_context
from app.services.notifications import ClientOutbox, Outbound
from app.services.task_manager import UnknownTaskError
from app.stores.live_state import LiveStateUnavailableError

log = logging.getLogger(__name__)
router = APIRouter()

CLOSE_TASK_ENDED = 1000
CLOSE_STREAM_LOST = 1011
"""The task's process (another API process) stopped responding, or the live-state store is unreachable."""
CLOSE_TRY_AGAIN_LATER = 1013
"""The task already has ``SPOTON_WS_MAX_CLIENTS_PER_TASK`` clients in this process."""
CLOSE_UNKNOWN_TASK = 4404
CLOSE_SEND_TIMEOUT = 4408
CLOSE_TOO_SLOW = 4429


class _CloseClient(Exception):
    """Ends a client's stream with a close code other than 1000."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


async def find_stream(ctx: AppContext, task_id: str) -> tuple[int, str] | None:
    """None when the task can be streamed here (it runs here or is now followed); else the close."""
    if ctx.tasks.is_local(task_id):
        if ctx.hub.is_streaming(task_id):
            return None
        return CLOSE_TASK_ENDED, "task finished"  # ended long ago: its last frames are forgotten
    try:
        if await ctx.hub.follow(task_id):
            return None
    except LiveStateUnavailableError:
        log.warning("task %s: live state unreachable, closing a WebSocket client", task_id)
        return CLOSE_STREAM_LOST, "live state store unreachable"
    return CLOSE_UNKNOWN_TASK, f"processing task '{task_id}' not found"


Translate = Callable[[Outbound], list[Outbound]]
"""Turns one hub message into what this client is sent (the frontend-compatibility mode's per-camera JSON)."""


@router.websocket("/ws/tracking/{task_id}")
async def tracking_ws(websocket: WebSocket, task_id: str) -> None:
    ctx = get_context(websocket)
    if not origin_allowed(websocket, f"{ctx.settings.ws_allowed_origins},{ctx.settings.cors_origins}"):
        await websocket.close(code=CLOSE_FORBIDDEN, reason="origin not allowed")  # before accept: HTTP 403
        return
    translate: Translate | None = None
    if ctx.settings.frontend_compat and "tab_id" in websocket.query_params:
        from app.api.compat.legacy_ws import legacy_translator

        translate = await legacy_translator(websocket, ctx, task_id)
    await websocket.accept()
    who = await authenticate_websocket(websocket, ctx.settings.ws_auth_timeout_s)
    if who is None:
        return
    if who.environments is not None:
        try:
            allowed = who.may_see((await ctx.tasks.find(task_id)).environment_id)
        except (UnknownTaskError, LiveStateUnavailableError):
            allowed = False
        if not allowed:
            await websocket.close(code=CLOSE_FORBIDDEN, reason="this key may not watch this task")
            return
    refused = await find_stream(ctx, task_id)
    if refused is not None:
        await websocket.close(code=refused[0], reason=refused[1][:120])
        return
    most = ctx.settings.ws_max_clients_per_task
    if most and ctx.hub.subscriber_count(task_id) >= most:
        await websocket.close(code=CLOSE_TRY_AGAIN_LATER, reason=f"this task already has {most} clients here")
        return
    box = ctx.hub.subscribe(task_id)
    sender = asyncio.create_task(_send(websocket, box, ctx, task_id, translate))
    receiver = asyncio.create_task(_drain(websocket))
    try:
        done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        ctx.hub.unsubscribe(task_id, box)
        for t in (sender, receiver):
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError, _CloseClient):
                await t  # outcomes are read below; _CloseClient must not escape (the client gets its code)
    if sender not in done:
        return  # the client went away
    exc = sender.exception()
    code, reason = CLOSE_TASK_ENDED, "task finished"
    if isinstance(exc, _CloseClient):
        code, reason = exc.code, exc.reason[:120]
        log.info("task %s: closing a WebSocket client: %s", task_id, reason)
    elif exc is not None:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code=code, reason=reason), timeout=2.0)


async def _send(
    websocket: WebSocket, box: ClientOutbox, ctx: AppContext, task_id: str, translate: Translate | None = None
) -> None:
    s = ctx.settings
    while True:
        if box.behind_since is not None and time.monotonic() - box.behind_since > s.ws_slow_client_close_s:
            raise _CloseClient(CLOSE_TOO_SLOW, f"client stayed behind for more than {s.ws_slow_client_close_s:g} s")
        try:
            msg = await asyncio.wait_for(box.get(), timeout=1.0)
        except TimeoutError:
            continue
        if msg.kind == "close":
            if msg.reason:
                raise _CloseClient(CLOSE_STREAM_LOST, msg.reason)
            return
        for out in translate(msg) if translate is not None else (msg,):
            try:
                if out.kind == "bytes":
                    assert isinstance(out.data, bytes)
                    await asyncio.wait_for(websocket.send_bytes(out.data), timeout=s.ws_send_timeout_s)
                    ctx.hub.record_send(task_id, out)
                else:
                    assert isinstance(out.data, str)
                    await asyncio.wait_for(websocket.send_text(out.data), timeout=s.ws_send_timeout_s)
            except TimeoutError:
                raise _CloseClient(
                    CLOSE_SEND_TIMEOUT, f"a send did not complete within {s.ws_send_timeout_s:g} s"
                ) from None


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) client messages so a disconnect is noticed at once."""
    while True:
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            return
