"""``GET /health``: per-component readiness; 503 while starting or when an essential part failed."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from app.api.deps import AppContext, get_context
from app.api.v1.schemas import ComponentOut, HealthResponse
from app.core.lifecycle import gpu_summary

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(
    request: Request, response: Response, ctx: Annotated[AppContext, Depends(get_context)]
) -> HealthResponse:
    overall = ctx.components.overall()
    if overall in ("starting", "unhealthy"):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return HealthResponse(
        status=overall,  # type: ignore[arg-type]
        role=getattr(request.app.state, "role", "single"),
        components={
            name: ComponentOut(
                state=h.state.value,
                essential=h.essential,
                device=h.device,
                detail=h.detail,
                info=h.info,
            )
            for name, h in ctx.components.health.items()
        },
        gpu=gpu_summary(),
        active_tasks=sum(1 for t in ctx.tasks.list() if not t.status.finished),
    )
