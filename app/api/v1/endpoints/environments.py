"""Environments and their cameras (read-only configuration)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status

from app.api.deps import AppContext, get_context
from app.api.v1.schemas import CameraOut, EnvironmentOut, ErrorResponse
from app.services.environments import EnvironmentSpec

router = APIRouter(prefix="/config", tags=["config"])
Ctx = Annotated[AppContext, Depends(get_context)]


def _env_out(e: EnvironmentSpec) -> EnvironmentOut:
    return EnvironmentOut(
        id=e.id,
        name=e.name,
        description=e.description,
        map_width_m=e.map.width_m,
        map_height_m=e.map.height_m,
        map_pixels_per_meter=e.map.pixels_per_meter,
        map_origin_m=e.map.origin_m,
        camera_ids=list(e.cameras),
        overlaps=sorted(tuple(sorted(p)) for p in e.overlaps),  # type: ignore[misc]
    )


@router.get("/environments", response_model=list[EnvironmentOut])
async def list_environments(ctx: Ctx) -> list[EnvironmentOut]:
    return [_env_out(e) for e in ctx.catalog.all()]


@router.get(
    "/environments/{environment_id}/cameras",
    response_model=list[CameraOut],
    responses={404: {"model": ErrorResponse}},
)
async def list_cameras(environment_id: str, ctx: Ctx) -> list[CameraOut]:
    env = ctx.catalog.get(environment_id)
    if env is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"environment '{environment_id}' not found")
    ppm = env.map.pixels_per_meter
    return [
        CameraOut(
            id=c.id,
            name=c.name,
            width=c.width,
            height=c.height,
            fps=c.fps,
            image_to_map_homography=c.image_to_map_px.tolist(),
            reprojection_error_m=None if c.reprojection_error_px is None else c.reprojection_error_px / ppm,
        )
        for c in env.cameras.values()
    ]
