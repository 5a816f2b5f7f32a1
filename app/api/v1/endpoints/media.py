"""Sub-videos of a task's cameras as files, with HTTP range requests (deprecated in the seed; kept for
debugging and downloads).

Safe by construction: the file name is looked up among the camera's *listed* sub-videos and never joined
onto a path, so ``..``, absolute paths, encoded separators or any other name that is not a known sub-video
of that camera get 404 before anything is read, fetched or created. A known sub-video is served from the
cache (fetched first when it is not there yet); a file that is a symlink or resolves outside its store is
refused, and the file stays pinned in the cache until its response is sent.
"""

from __future__ import annotations

import mimetypes
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from starlette.responses import FileResponse
from starlette.types import Receive, Scope, Send

from app.api.deps import AppContext, get_context
from app.api.v1.schemas import ErrorResponse
from app.services.task_manager import UnknownTaskError
from app.services.video_sources.base import Lease, VideoStoreError, is_sub_video_name

router = APIRouter(prefix="/media", tags=["media"])
Ctx = Annotated[AppContext, Depends(get_context)]


class LeasedFileResponse(FileResponse):
    """A file response that keeps its cache lease until the body is sent or the client has gone."""

    def __init__(self, lease: Lease, filename: str) -> None:
        super().__init__(
            lease.path,
            media_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
            filename=filename,
            content_disposition_type="inline",
            stat_result=os.stat(lease.path),
        )
        self._lease = lease

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._lease.release()


NOT_FOUND = "sub-video not found"
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"video/mp4": {}}, "description": "The whole sub-video."},
    206: {"content": {"video/mp4": {}}, "description": "The requested byte range (``Range: bytes=a-b``)."},
    404: {"model": ErrorResponse, "description": "Unknown task, environment, camera or sub-video."},
    416: {"description": "Range not satisfiable."},
    502: {"model": ErrorResponse, "description": "The sub-video could not be fetched from its store."},
}


@router.api_route(
    # ``:path`` so that every name under the prefix reaches the check below (and gets 404), rather than a
    # trailing slash being redirected or a decoded ``%2F`` falling through to other routes
    "/tasks/{task_id}/environments/{environment_id}/cameras/{camera_id}/sub_videos/{sub_video_filename:path}",
    methods=["GET", "HEAD"],
    deprecated=True,
    response_class=FileResponse,
    responses=RESPONSES,
)
async def get_sub_video(
    task_id: str, environment_id: str, camera_id: str, sub_video_filename: str, ctx: Ctx
) -> FileResponse:
    """A known sub-video of one of the task's cameras (HTTP range requests supported)."""
    try:
        task = ctx.tasks.get(task_id)
    except UnknownTaskError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND) from None
    env = ctx.catalog.get(environment_id)
    if (
        task.environment_id != environment_id
        or camera_id not in task.camera_ids
        or env is None
        or camera_id not in env.cameras
        or not is_sub_video_name(sub_video_filename)
    ):
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    try:
        lease = await ctx.tasks.videos.library.acquire(env.cameras[camera_id], sub_video_filename)
    except VideoStoreError as exc:
        raise HTTPException(status.HTTP_502_BAD_GATEWAY, f"sub-video could not be fetched: {exc}") from None
    if lease is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    try:
        return LeasedFileResponse(lease, sub_video_filename)
    except BaseException:
        lease.release()
        raise
