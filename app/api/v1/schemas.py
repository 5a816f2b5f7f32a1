"""Pydantic models of the REST API (the edge of the service)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.services.processing_task import TaskStatus


class StartTaskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment_id: str = Field(min_length=1, max_length=200)
    camera_ids: list[str] | None = Field(
        default=None, min_length=1, description="Cameras to process; all cameras of the environment if omitted."
    )


class StartTaskResponse(BaseModel):
    task_id: str
    status: TaskStatus
    status_url: str
    websocket_url: str


class TaskStatusResponse(BaseModel):
    task_id: str
    environment_id: str
    camera_ids: list[str]
    status: TaskStatus
    progress: float = Field(ge=0.0, le=1.0)
    current_step: str
    details: str
    created_at: datetime
    updated_at: datetime
    fps: float
    fps_per_camera: dict[str, float]
    frames_processed: int
    frames_skipped: int
    persons_now: int
    global_ids_total: int
    latency_ms_p50: float | None = Field(description="decode → published, milliseconds")
    latency_ms_p95: float | None
    latency_ms_p99: float | None
    send_latency_ms: dict[str, dict[str, float]] = Field(
        description="per camera, decode → WebSocket send completed: p50/p95/p99 milliseconds"
    )
    stage_ms: dict[str, float]
    outside_models_share: float | None
    jpeg_quality: int | None


class CameraOut(BaseModel):
    id: str
    name: str
    width: int
    height: int
    fps: float
    image_to_map_homography: list[list[float]]
    reprojection_error_m: float | None
    footprint_m: list[tuple[float, float]] = []
    """The ground the camera sees, a polygon in map metres (clipped to the map)."""


class EnvironmentOut(BaseModel):
    id: str
    name: str
    description: str
    map_width_m: float
    map_height_m: float
    map_pixels_per_meter: float
    map_origin_m: tuple[float, float]
    camera_ids: list[str]
    overlaps: list[tuple[str, str]]
    map_image_url: str | None = None
    """The map picture (map pixels; ``map_pixels_per_meter``), when the environment has one."""


class ComponentOut(BaseModel):
    state: Literal["loading", "ready", "failed"]
    essential: bool
    device: str | None
    detail: str
    info: dict[str, Any]


class HealthResponse(BaseModel):
    status: Literal["starting", "healthy", "degraded", "unhealthy"]
    components: dict[str, ComponentOut]
    gpu: dict[str, Any]
    active_tasks: int


class ErrorResponse(BaseModel):
    detail: str
