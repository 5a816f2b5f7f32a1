"""Processing tasks: start, status, stop, list.

Status also answers for a task that runs in another API process sharing the live-state store (from its
latest snapshot, at most about a second old). With scale-out (``SPOTON_NATS_URL``) a start is queued for the
workers (202, QUEUED) and stop and the list cover the whole cluster; without it they cover this process.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status

from app.api.auth import Operator, Viewer, check_scope
from app.api.deps import AppContext, find_task, get_context
from app.api.v1.schemas import ErrorResponse, StartTaskRequest, StartTaskResponse, TaskStatusResponse
from app.services.processing_task import TaskState
from app.services.task_manager import TaskElsewhereError, UnknownCameraError, UnknownEnvironmentError, UnknownTaskError
from app.stores.live_state import LiveStateUnavailableError

router = APIRouter(prefix="/processing-tasks", tags=["processing-tasks"])
Ctx = Annotated[AppContext, Depends(get_context)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}
STATUS_ERRORS: dict[int | str, dict[str, Any]] = {**NOT_FOUND, 503: {"model": ErrorResponse}}
STOP_ERRORS: dict[int | str, dict[str, Any]] = {**STATUS_ERRORS, 409: {"model": ErrorResponse}}


def to_status(t: TaskState) -> TaskStatusResponse:
    st = t.stats
    return TaskStatusResponse(
        task_id=t.task_id,
        environment_id=t.environment_id,
        camera_ids=t.camera_ids,
        status=t.status,
        progress=t.progress,
        current_step=t.current_step,
        details=t.details,
        created_at=t.created_at,
        updated_at=t.updated_at,
        fps=st.fps_total,
        fps_per_camera=st.fps_per_camera,
        frames_processed=st.frames_processed,
        frames_skipped=st.frames_skipped,
        persons_now=st.persons_now,
        global_ids_total=st.global_ids_total,
        latency_ms_p50=st.latency_ms_p50,
        latency_ms_p95=st.latency_ms_p95,
        latency_ms_p99=st.latency_ms_p99,
        send_latency_ms=st.send_latency_ms,
        stage_ms=st.stage_ms,
        outside_models_share=st.outside_models_share,
        jpeg_quality=st.jpeg_quality,
        worker_id=t.worker_id,
        resumed_from_frame=t.resumed_from_frame,
        queue_position=t.queue_position,
    )


def _not_found(task_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"processing task '{task_id}' not found")


@router.post(
    "/start",
    response_model=StartTaskResponse,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **NOT_FOUND,
        400: {"model": ErrorResponse, "description": "the body is not JSON"},
        409: {"model": ErrorResponse, "description": "this key already runs SPOTON_MAX_TASKS_PER_KEY tasks"},
        413: {"model": ErrorResponse, "description": "the body is larger than SPOTON_MAX_REQUEST_BODY_BYTES"},
        429: {"model": ErrorResponse, "description": "more than SPOTON_TASK_STARTS_PER_MINUTE starts"},
    },
)
async def start_task(body: StartTaskRequest, request: Request, ctx: Ctx, who: Operator) -> StartTaskResponse:
    check_scope(who, body.environment_id)
    request.app.state.start_limiter.check(who.name)
    limit = ctx.settings.max_tasks_per_key
    running = [t for t in await ctx.tasks.list_all() if not t.status.finished and t.extra.get("owner") == who.name]
    if limit and len(running) >= limit:
        raise HTTPException(status.HTTP_409_CONFLICT, f"this key already runs {len(running)} task(s) (limit {limit})")
    try:
        task = await ctx.tasks.start(body.environment_id, body.camera_ids, owner=who.name)
    except UnknownEnvironmentError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"environment '{body.environment_id}' not found"
        ) from None
    except UnknownCameraError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    task.extra["owner"] = who.name
    ws_scheme = "wss" if request.url.scheme == "https" else "ws"
    base = f"{request.url.scheme}://{request.url.netloc}"
    return StartTaskResponse(
        task_id=task.task_id,
        status=task.status,
        status_url=f"{base}/api/v1/processing-tasks/{task.task_id}/status",
        websocket_url=f"{ws_scheme}://{request.url.netloc}/ws/tracking/{task.task_id}",
    )


@router.get("/{task_id}/status", response_model=TaskStatusResponse, responses=STATUS_ERRORS)
async def task_status(task_id: str, ctx: Ctx, who: Viewer) -> TaskStatusResponse:
    task = await find_task(ctx, task_id)
    check_scope(who, task.environment_id)
    return to_status(task)


@router.post("/{task_id}/stop", response_model=TaskStatusResponse, responses=STOP_ERRORS)
async def stop_task(task_id: str, ctx: Ctx, who: Operator) -> TaskStatusResponse:
    check_scope(who, (await find_task(ctx, task_id)).environment_id)
    try:
        return to_status(await ctx.tasks.stop_anywhere(task_id))
    except UnknownTaskError:
        raise _not_found(task_id) from None
    except TaskElsewhereError:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"processing task '{task_id}' runs in another server process: stop it there"
        ) from None


@router.get("", response_model=list[TaskStatusResponse], responses={503: {"model": ErrorResponse}})
async def list_tasks(ctx: Ctx, who: Viewer) -> list[TaskStatusResponse]:
    try:
        tasks = await ctx.tasks.list_all()
    except LiveStateUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    return [to_status(t) for t in tasks if who.may_see(t.environment_id)]
