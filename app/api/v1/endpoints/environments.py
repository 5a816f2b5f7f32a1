"""Environments and their cameras (read-only configuration)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import FileResponse

from app.api.auth import Viewer, check_scope
from app.api.deps import AppContext, get_context
from app.api.v1.schemas import CameraOut, EnvironmentOut, ErrorResponse
from app.services.environments import EnvironmentSpec
from app.services.homography import ground_footprint

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
        map_image_url=f"/api/v1/config/environments/{e.id}/map" if _map_image(e) is not None else None,
    )


def _map_image(e: EnvironmentSpec) -> Path | None:
    image = e.map.image
    return image if image is not None and image.is_file() else None


@router.get("/environments", response_model=list[EnvironmentOut])
async def list_environments(ctx: Ctx, who: Viewer) -> list[EnvironmentOut]:
    return [_env_out(e) for e in ctx.catalog.all() if who.may_see(e.id)]


@router.get(
    "/environments/{environment_id}/cameras",
    response_model=list[CameraOut],
    responses={404: {"model": ErrorResponse}},
)
async def list_cameras(environment_id: str, ctx: Ctx, who: Viewer) -> list[CameraOut]:
    check_scope(who, environment_id)
    env = ctx.catalog.get(environment_id)
    if env is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"environment '{environment_id}' not found")
    ppm = env.map.pixels_per_meter
    (ox, oy), m = env.map.origin_m, env.map
    bounds = (ox, oy, ox + m.width_m, oy + m.height_m)
    return [
        CameraOut(
            id=c.id,
            name=c.name,
            width=c.width,
            height=c.height,
            fps=c.fps,
            image_to_map_homography=c.image_to_map_px.tolist(),
            reprojection_error_m=None if c.reprojection_error_px is None else c.reprojection_error_px / ppm,
            footprint_m=ground_footprint(env.image_to_metres(c.id), c.width, c.height, bounds),
        )
        for c in env.cameras.values()
    ]


@router.get(
    "/environments/{environment_id}/map",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}, 404: {"model": ErrorResponse}},
)
async def map_image(environment_id: str, ctx: Ctx, who: Viewer) -> FileResponse:
    """The environment's map picture (map pixels: ``px = (m - map_origin_m) * map_pixels_per_meter``)."""
    check_scope(who, environment_id)
    env = ctx.catalog.get(environment_id)
    if env is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"environment '{environment_id}' not found")
    image = _map_image(env)
    if image is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"environment '{environment_id}' has no map image")
    return FileResponse(image, headers={"Cache-Control": "max-age=300"})
