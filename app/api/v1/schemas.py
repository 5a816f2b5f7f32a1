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
    worker_id: str | None = Field(default=None, description="the worker running it (scale-out)")
    resumed_from_frame: int | None = Field(
        default=None, description="after a worker was lost: the global frame the task resumed after"
    )
    queue_position: int | None = Field(default=None, description="while QUEUED in a cluster: 1 is next")


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
    role: Literal["single", "api", "worker", "all"] = Field(
        default="single",
        description="single: API and tasks in one process; api: no models, tasks run on the cluster's workers; "
        "all: API and a worker, against NATS",
    )
    components: dict[str, ComponentOut]
    gpu: dict[str, Any]
    active_tasks: int


class WorkerOut(BaseModel):
    worker_id: str
    host: str
    pid: int
    slots: int
    running_tasks: list[str]
    load: float = Field(description="running tasks / slots")
    accepting: bool = Field(description="takes new tasks (models ready, not shutting down)")
    alive: bool = Field(description="heartbeat younger than three heartbeat periods")
    device: str
    models: dict[str, Any]
    gpu: dict[str, Any]
    task_gpu_mb: float | None = Field(description="GPU memory one more task needs (measured at warm-up)")
    cpu_percent: float
    started_at: datetime
    heartbeat_age_s: float
    counters: dict[str, int] = Field(
        default_factory=dict, description="tasks taken, resumed, completed, handed back, lost (lease)"
    )


class ErrorResponse(BaseModel):
    detail: str
