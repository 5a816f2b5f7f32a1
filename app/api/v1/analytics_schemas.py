"""Pydantic models of the analytics API (``/api/v1/analytics_data``)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class PageOut(_Out, Generic[T]):
    items: list[T]
    total: int = Field(description="rows matching the query (all pages)")
    limit: int
    offset: int


class OccupancyOut(_Out):
    bucket_start: datetime
    environment_id: str
    camera_id: str | None = Field(description="null for the whole environment")
    people: int = Field(description="distinct people seen in the bucket")
    mean_people: float = Field(description="person-seconds in the bucket / bucket length")


class OccupancyPage(PageOut[OccupancyOut]):
    bucket_s: float


class CameraCountOut(_Out):
    environment_id: str
    camera_id: str
    people: int


class UniquePeopleOut(_Out):
    people: int = Field(description="distinct people (task, global id after merges)")
    per_camera: list[CameraCountOut]


class PersonDwellOut(_Out):
    task_id: str
    environment_id: str
    global_id: int
    first_seen: datetime
    last_seen: datetime
    dwell_s: float = Field(description="seconds seen by at least one camera")
    cameras: int


class CameraDwellOut(_Out):
    environment_id: str
    camera_id: str
    people: int
    person_seconds: float
    mean_dwell_s: float


class CameraDwellList(_Out):
    items: list[CameraDwellOut]


class TrajectoryPointOut(_Out):
    time: datetime = Field(description="start of the bucket")
    x: float = Field(description="map x, metres (mean over the bucket's sightings)")
    y: float = Field(description="map y, metres")
    samples: int
    cameras: int


class TrajectoryPage(PageOut[TrajectoryPointOut]):
    task_id: str
    global_id: int
    bucket_s: float


class HeatmapCellOut(_Out):
    ix: int
    iy: int
    x_min: float = Field(description="cell covers [x_min, x_min + cell_m) metres")
    y_min: float
    samples: int = Field(description="person-frames in the cell")
    person_seconds: float


class HeatmapPage(PageOut[HeatmapCellOut]):
    cell_m: float


class TransitionOut(_Out):
    environment_id: str
    from_camera: str
    to_camera: str
    count: int
    mean_travel_s: float = Field(description="next visit's start − previous visit's end; < 0: views overlap")
    median_travel_s: float
    min_travel_s: float
    max_travel_s: float


class TransitionList(_Out):
    gap_s: float
    items: list[TransitionOut]


class TaskRunOut(_Out):
    task_id: str
    environment_id: str
    camera_ids: list[str]
    status: str
    details: str
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    frames_processed: int
    frames_skipped: int


class TaskRunPage(PageOut[TaskRunOut]):
    pass
