"""Processing tasks: start, status, stop, list."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status

from app.api.deps import AppContext, get_context
from app.api.v1.schemas import ErrorResponse, StartTaskRequest, StartTaskResponse, TaskStatusResponse
from app.services.processing_task import TaskState
from app.services.task_manager import UnknownCameraError, UnknownEnvironmentError, UnknownTaskError

router = APIRouter(prefix="/processing-tasks", tags=["processing-tasks"])
Ctx = Annotated[AppContext, Depends(get_context)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse}}


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
    )


def _task(ctx: AppContext, task_id: str) -> TaskState:
    try:
        return ctx.tasks.get(task_id)
    except UnknownTaskError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"processing task '{task_id}' not found") from None


@router.post(
    "/start",
    response_model=StartTaskResponse,
    status_code=status.HTTP_202_ACCEPTED,
    responses={**NOT_FOUND, 422: {"model": ErrorResponse}},
)
async def start_task(body: StartTaskRequest, request: Request, ctx: Ctx) -> StartTaskResponse:
    try:
        task = ctx.tasks.start(body.environment_id, body.camera_ids)
    except UnknownEnvironmentError:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"environment '{body.environment_id}' not found"
        ) from None
    except UnknownCameraError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    ws_scheme = "wss" if request.url.scheme == "https" else "ws"
    base = f"{request.url.scheme}://{request.url.netloc}"
    return StartTaskResponse(
        task_id=task.task_id,
        status=task.status,
        status_url=f"{base}/api/v1/processing-tasks/{task.task_id}/status",
        websocket_url=f"{ws_scheme}://{request.url.netloc}/ws/tracking/{task.task_id}",
    )


@router.get("/{task_id}/status", response_model=TaskStatusResponse, responses=NOT_FOUND)
async def task_status(task_id: str, ctx: Ctx) -> TaskStatusResponse:
    return to_status(_task(ctx, task_id))


@router.post("/{task_id}/stop", response_model=TaskStatusResponse, responses=NOT_FOUND)
async def stop_task(task_id: str, ctx: Ctx) -> TaskStatusResponse:
    _task(ctx, task_id)
    return to_status(ctx.tasks.stop(task_id))


@router.get("", response_model=list[TaskStatusResponse])
async def list_tasks(ctx: Ctx) -> list[TaskStatusResponse]:
    return [to_status(t) for t in ctx.tasks.list()]
