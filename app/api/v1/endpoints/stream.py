"""``GET /api/v1/stream/{task_id}/{camera_id}``: one camera of a task as MJPEG (``multipart/x-mixed-replace``).

Any ``<img>`` tag, VLC or a home-automation camera card can show it. It is fed from the same hub as the
WebSocket, through a client outbox of its own: newest frame wins, nothing queues up behind a slow reader, and a
reader that stays behind longer than ``SPOTON_WS_SLOW_CLIENT_CLOSE_S`` is dropped. ``?overlay=1`` draws each
track's box and global id into the frame (the frame is held until its ``tracking_update`` arrives, which the
hub publishes right after the frames of a global frame).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from app.api.auth import Viewer, check_scope, current_principal, keystore
from app.api.compat.aliases import Letterbox
from app.api.compat.legacy_ws import letterboxes_for
from app.api.deps import AppContext, find_task, get_context
from app.api.v1.schemas import ErrorResponse
from app.api.websockets import find_stream
from app.core.security import Principal, Role
from app.services.notifications import ClientOutbox
from app.services.overlay import draw_tracks, pad_jpeg
from app.utils.wire import FrameHeaderError, unpack_frame

log = logging.getLogger(__name__)
router = APIRouter(prefix="/stream", tags=["stream"])
Ctx = Annotated[AppContext, Depends(get_context)]
BOUNDARY = "frame"


def part(jpeg: bytes) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n"
    )


@router.get(
    "/{task_id}/{camera_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}, "description": "JPEG parts"},
        404: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)
async def mjpeg(
    task_id: str,
    camera_id: str,
    request: Request,
    ctx: Ctx,
    overlay: Annotated[bool, Query(description="draw boxes and global ids into the frames")] = False,
    exp: Annotated[int | None, Query(description="signed URL: expiry (epoch seconds)")] = None,
    sig: Annotated[str | None, Query(max_length=128, description="signed URL: signature")] = None,
    key: Annotated[str | None, Query(max_length=200, description="signed URL: the key's name")] = None,
) -> StreamingResponse:
    who = await _stream_principal(request, exp, sig, key)
    task = await find_task(ctx, task_id)
    check_scope(who, task.environment_id)
    letterbox: Letterbox | None = None
    if camera_id not in task.camera_ids and ctx.settings.frontend_compat:
        # the original frontend's camera ids (docs/frontend-compat.md): 16:9 frames, so its boxes line up
        alias = request.app.state.frontend_aliases.for_environment(task.environment_id)
        ours = alias.ours(camera_id) if alias is not None else None
        if ours is not None:
            camera_id = ours
            letterbox = letterboxes_for(ctx, task.environment_id).get(ours)
    if camera_id not in task.camera_ids:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"camera '{camera_id}' is not part of task '{task_id}'")
    refused = await find_stream(ctx, task_id)
    if refused is not None:  # ended so long ago that its frames are forgotten, or the store is unreachable
        code = status.HTTP_503_SERVICE_UNAVAILABLE if refused[0] == 1011 else status.HTTP_404_NOT_FOUND
        raise HTTPException(code, f"no stream for task '{task_id}': {refused[1]}")
    box = ctx.hub.subscribe(task_id)
    return StreamingResponse(
        _parts(ctx, request, task_id, camera_id, box, overlay, letterbox if letterbox and letterbox.needed else None),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream_principal(request: Request, exp: int | None, sig: str | None, key: str | None) -> Principal:
    """A Bearer key, or a signed URL issued by ``POST .../url`` (an ``<img>`` tag cannot send headers)."""
    store = keystore(request)
    if store.enabled and sig is not None and exp is not None and key is not None:
        principal = store.principal_named(key)
        if principal is None and key.startswith("jwt:"):
            # a token's holder: the signature proves the URL was issued to them for this path, in scope
            principal = Principal(key, Role.viewer, None)
        if principal is not None and store.verify(request.url.path, exp, sig, key):
            return principal
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "stream URL signature invalid or expired")
    return await current_principal(request)


class SignedUrl(BaseModel):
    url: str
    expires_at: int


@router.post("/{task_id}/{camera_id}/url", response_model=SignedUrl, responses={401: {"model": ErrorResponse}})
async def signed_url(task_id: str, camera_id: str, request: Request, who: Viewer, ctx: Ctx) -> SignedUrl:
    """A short-lived URL of this camera's MJPEG that needs no header (for ``<img>`` tags)."""
    store = keystore(request)
    if who.environments is not None:  # scoped: only for tasks it may watch (the URL carries no scope)
        check_scope(who, (await find_task(ctx, task_id)).environment_id)
    path = request.url.path.removesuffix("/url")
    if not store.enabled:
        return SignedUrl(url=path, expires_at=0)
    exp, sig = store.sign(path, who)
    return SignedUrl(url=f"{path}?{urlencode({'exp': exp, 'sig': sig, 'key': who.name})}", expires_at=exp)


async def _parts(
    ctx: AppContext,
    request: Request,
    task_id: str,
    camera_id: str,
    box: ClientOutbox,
    overlay: bool,
    letterbox: Letterbox | None = None,
) -> AsyncIterator[bytes]:
    held: tuple[int, bytes] | None = None  # overlay: the newest frame waiting for its tracks
    limit = ctx.settings.ws_slow_client_close_s
    try:
        while True:
            if box.behind_since is not None and time.monotonic() - box.behind_since > limit:
                log.info("task %s: MJPEG reader of %s stayed behind for %g s; dropped", task_id, camera_id, limit)
                return
            try:
                msg = await asyncio.wait_for(box.get(), timeout=1.0)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if msg.kind == "close":
                if held is not None:
                    yield part(held[1])
                return
            if msg.kind == "bytes":
                if msg.camera_id != camera_id:
                    continue
                assert isinstance(msg.data, bytes)
                try:
                    header, jpeg = unpack_frame(msg.data)
                except FrameHeaderError:
                    continue
                if not overlay:
                    yield part(await asyncio.to_thread(pad_jpeg, jpeg, letterbox) if letterbox else jpeg)
                    continue
                held = (header.frame_index, jpeg)
            elif overlay and held is not None:
                assert isinstance(msg.data, str)
                tracks = _tracks_of(msg.data, camera_id, held[0])
                if tracks is not None:
                    jpeg = await asyncio.to_thread(draw_tracks, held[1], tracks)
                    if letterbox is not None:
                        jpeg = await asyncio.to_thread(pad_jpeg, jpeg, letterbox)
                    held = None
                    yield part(jpeg)
    finally:
        ctx.hub.unsubscribe(task_id, box)


def _tracks_of(text: str, camera_id: str, frame_index: int) -> list[dict[str, Any]] | None:
    """The camera's tracks in a ``tracking_update`` of that frame (None for any other message)."""
    if '"tracking_update"' not in text:
        return None
    try:
        cam = json.loads(text)["cameras"][camera_id]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(cam, dict) or cam.get("frame_index") != frame_index:
        return None
    tracks = cam.get("tracks")
    return tracks if isinstance(tracks, list) else []
