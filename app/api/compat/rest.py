"""The original frontend's REST calls, answered from the task manager (shapes: docs/frontend-compat.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict

from app.api.compat.aliases import DISPLAY, AliasTable, EnvironmentAlias
from app.api.deps import AppContext, find_task, get_context
from app.api.v1.schemas import ErrorResponse
from app.services.processing_task import TaskState, TaskStatus

router = APIRouter(prefix="/api/v1", tags=["frontend compatibility"])
Ctx = Annotated[AppContext, Depends(get_context)]
ENDED = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.STOPPED}


def aliases_of(request: Request) -> AliasTable:
    table: AliasTable = request.app.state.frontend_aliases
    return table


Aliases = Annotated[AliasTable, Depends(aliases_of)]


class LegacyStartRequest(BaseModel):
    """The frontend's start body; ``debug`` and ``render_debug_overlay`` are accepted and ignored."""

    model_config = ConfigDict(extra="ignore")
    environment_id: str
    debug: bool = False
    render_debug_overlay: bool = False


def _alias_or_404(aliases: AliasTable, environment_id: str) -> EnvironmentAlias:
    alias = aliases.get(environment_id)
    if alias is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"environment '{environment_id}' is not mapped (campus/factory)")
    return alias


def _task_out(t: TaskState, aliases: AliasTable) -> dict[str, Any]:
    alias = aliases.for_environment(t.environment_id)
    return {
        "task_id": t.task_id,
        "environment_id": alias.alias if alias is not None else t.environment_id,
        "status": t.status.value,
        "details": t.details,
        "progress": t.progress,
        "current_step": t.current_step,
        "created_at": t.created_at.isoformat(),
    }


@router.get("/detection-processing-tasks/environments")
async def environments(ctx: Ctx, aliases: Aliases) -> dict[str, Any]:
    out = []
    for alias in aliases.aliases.values():
        env = ctx.catalog.get(alias.environment_id)
        if env is None:
            continue
        meta = {theirs: {"display_name": env.cameras[ours].name or ours} for theirs, ours in alias.cameras.items()}
        out.append(
            {
                "environment_id": alias.alias,
                "display_name": DISPLAY.get(alias.alias, alias.alias),
                "cameras": list(alias.cameras),
                "camera_metadata": meta,
                "backing_environment_id": env.id,
            }
        )
    return {"data": {"environments": out}, "environments": out}


@router.get("/detection-processing-tasks")
async def list_tasks(ctx: Ctx, aliases: Aliases) -> dict[str, Any]:
    return {"data": {"tasks": [_task_out(t, aliases) for t in await ctx.tasks.list_all()]}}


@router.post(
    "/detection-processing-tasks/start",
    status_code=status.HTTP_202_ACCEPTED,
    responses={404: {"model": ErrorResponse}},
)
async def start(body: LegacyStartRequest, ctx: Ctx, aliases: Aliases) -> dict[str, Any]:
    alias = _alias_or_404(aliases, body.environment_id)
    task = await ctx.tasks.start(alias.environment_id, list(alias.cameras.values()))
    out = _task_out(task, aliases)
    out["message"] = f"detection processing started for {alias.alias}"
    return out


@router.get("/detection-processing-tasks/{task_id}/status", responses={404: {"model": ErrorResponse}})
async def task_status(task_id: str, ctx: Ctx, aliases: Aliases) -> dict[str, Any]:
    return _task_out(await find_task(ctx, task_id), aliases)


@router.delete("/detection-processing-tasks/environment/{environment_id}/cleanup")
async def cleanup(environment_id: str, ctx: Ctx, aliases: Aliases) -> dict[str, Any]:
    """Stop every running task of the environment (in this process, or in the cluster with scale-out)."""
    alias = _alias_or_404(aliases, environment_id)
    stopped = []
    for t in await ctx.tasks.list_all():
        if t.environment_id == alias.environment_id and t.status not in ENDED:
            await ctx.tasks.stop_anywhere(t.task_id)
            stopped.append(t.task_id)
    return {"data": {"message": f"stopped {len(stopped)} task(s) of {alias.alias}", "stopped_tasks": stopped}}


@router.get("/controls/{task_id}/status", responses={404: {"model": ErrorResponse}})
async def playback_status(task_id: str, ctx: Ctx) -> dict[str, Any]:
    t = await find_task(ctx, task_id)
    return {
        "task_id": task_id,
        "state": "playing" if t.status not in ENDED else "stopped",
        "last_frame_index": t.stats.frames_processed + t.stats.frames_skipped,
        "total_frames": None,  # recorded video is played as if live: the length is not known up front
    }
