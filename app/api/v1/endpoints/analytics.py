"""``/api/v1/analytics_data``: occupancy, unique people, dwell, trajectories, heatmaps, camera transitions.

Answered by the history database (SQL), over event time = task playback start + video timestamp; the
definitions are in ``app/stores/history/analytics.py`` and docs/stores.md. Times without a zone are UTC.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from pydantic import BeforeValidator
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.requests import HTTPConnection

from app.api.auth import Viewer
from app.api.errors import unprocessable
from app.api.v1.analytics_schemas import (
    CameraDwellList,
    HeatmapPage,
    OccupancyPage,
    PageOut,
    PersonDwellOut,
    TaskRunPage,
    TrajectoryPage,
    TransitionList,
    UniquePeopleOut,
)
from app.core.security import Principal
from app.stores.history.analytics import HistoryAnalytics, HistoryFilter
from app.stores.history.service import HistoryService

router = APIRouter(prefix="/analytics_data", tags=["analytics"])
T = TypeVar("T")


def get_history(conn: HTTPConnection) -> HistoryService:
    service: HistoryService | None = getattr(conn.app.state, "history", None)
    if service is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "history is disabled (SPOTON_HISTORY_ENABLED=false)")
    return service


def get_analytics(conn: HTTPConnection) -> HistoryAnalytics:
    return get_history(conn).analytics


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def _iso_only(value: object) -> object:
    """ISO 8601 text only: pydantic would also take a bare number as a Unix time, which the schema does not say."""
    if isinstance(value, str) and not _ISO.match(value.strip()):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2024-01-01T00:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_only)]


def _filter(
    who: Principal,
    environment_id: str | None,
    task_id: str | None,
    start: datetime | None,
    end: datetime | None,
    resolve_merges: bool,
) -> HistoryFilter:
    if who.environments is not None and (environment_id is None or not who.may_see(environment_id)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this key is limited to some environments: pass one of them")
    try:
        return HistoryFilter(environment_id, task_id, _utc(start), _utc(end), resolve_merges)
    except ValueError as exc:
        raise unprocessable(str(exc)) from None


EnvironmentQ = Annotated[str | None, Query(max_length=200)]
FromQ = Annotated[IsoDateTime | None, Query(alias="from", description="inclusive; ISO 8601, UTC if no zone")]
ToQ = Annotated[
    IsoDateTime | None,
    Query(alias="to", description="exclusive; ISO 8601, UTC if no zone; an empty range gives empty results"),
]
MergesQ = Annotated[bool, Query(description="count ids later merged into another as that one (one person)")]


def history_filter(
    who: Viewer,
    environment_id: EnvironmentQ = None,
    task_id: Annotated[str | None, Query(max_length=64)] = None,
    start: FromQ = None,
    end: ToQ = None,
    resolve_merges: MergesQ = True,
) -> HistoryFilter:
    return _filter(who, environment_id, task_id, start, end, resolve_merges)


def task_history_filter(
    who: Viewer,
    task_id: Annotated[str, Query(min_length=1, max_length=64, description="global ids are per task")],
    environment_id: EnvironmentQ = None,
    start: FromQ = None,
    end: ToQ = None,
    resolve_merges: MergesQ = True,
) -> HistoryFilter:
    return _filter(who, environment_id, task_id, start, end, resolve_merges)


Analytics = Annotated[HistoryAnalytics, Depends(get_analytics)]
Filter = Annotated[HistoryFilter, Depends(history_filter)]
Limit = Annotated[int, Query(ge=1, le=10_000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
TaskFilter = Annotated[HistoryFilter, Depends(task_history_filter)]


async def _answer(query: Awaitable[T]) -> T:
    """The query's result; bad parameters → 422, an unreachable database → 503."""
    try:
        return await query
    except ValueError as exc:
        raise unprocessable(str(exc)) from None
    except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
        detail = f"history database unavailable: {type(exc).__name__}"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from None


@router.get("/occupancy", response_model=OccupancyPage)
async def occupancy(
    analytics: Analytics,
    f: Filter,
    scope: Literal["camera", "environment"] = "camera",
    bucket_s: Annotated[float, Query(ge=0.01, le=86_400 * 31, description="bucket length, seconds")] = 60.0,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> OccupancyPage:
    """People per time bucket, per camera or per environment (buckets aligned on the epoch)."""
    page = await _answer(analytics.occupancy(f, bucket_s, scope == "camera", limit, offset))
    return OccupancyPage.model_validate({**_page(page), "bucket_s": bucket_s})


@router.get("/unique_people", response_model=UniquePeopleOut)
async def unique_people(analytics: Analytics, f: Filter) -> UniquePeopleOut:
    return UniquePeopleOut.model_validate(await _answer(analytics.unique_people(f)))


@router.get("/dwell/people", response_model=PageOut[PersonDwellOut])
async def dwell_people(
    analytics: Analytics, f: Filter, limit: Limit = 100, offset: Offset = 0
) -> PageOut[PersonDwellOut]:
    """Per person: first/last seen and seconds seen (longest first)."""
    page = await _answer(analytics.dwell_people(f, limit, offset))
    return PageOut[PersonDwellOut].model_validate(_page(page))


@router.get("/dwell/cameras", response_model=CameraDwellList)
async def dwell_cameras(analytics: Analytics, f: Filter) -> CameraDwellList:
    """Per camera: people, person-seconds and mean dwell per person."""
    return CameraDwellList.model_validate({"items": await _answer(analytics.dwell_cameras(f))})


@router.get("/trajectory/{global_id}", response_model=TrajectoryPage)
async def trajectory(
    analytics: Analytics,
    f: TaskFilter,
    global_id: Annotated[int, Path(ge=0, le=2**31 - 1)],
    bucket_s: Annotated[float, Query(ge=0.01, le=3600, description="one point per bucket, seconds")] = 1.0,
    limit: Limit = 1000,
    offset: Offset = 0,
) -> TrajectoryPage:
    """Map positions (metres) of one person over time; ``task_id`` is required (ids are per task)."""
    page = await _answer(analytics.trajectory(f, global_id, bucket_s, limit, offset))
    return TrajectoryPage.model_validate(
        {**_page(page), "task_id": f.task_id, "global_id": global_id, "bucket_s": bucket_s}
    )


@router.get("/heatmap", response_model=HeatmapPage)
async def heatmap(
    analytics: Analytics,
    f: Filter,
    cell_m: Annotated[float, Query(ge=0.01, le=1000, description="cell size, metres")] = 1.0,
    limit: Limit = 10_000,
    offset: Offset = 0,
) -> HeatmapPage:
    """Person-frames and person-seconds per map cell."""
    page = await _answer(analytics.heatmap(f, cell_m, limit, offset))
    return HeatmapPage.model_validate({**_page(page), "cell_m": cell_m})


@router.get("/transitions", response_model=TransitionList)
async def transitions(
    history: Annotated[HistoryService, Depends(get_history)],
    f: Filter,
    gap_s: Annotated[
        float | None,
        Query(ge=0.01, le=86_400, description="a visit ends after this long unseen; default SPOTON_REID_LOST_AFTER_S"),
    ] = None,
) -> TransitionList:
    """Camera → camera transitions of people, with counts and travel times."""
    gap = gap_s if gap_s is not None else history.settings.reid_lost_after_s
    items = await _answer(history.analytics.transitions(f, gap))
    return TransitionList.model_validate({"gap_s": gap, "items": items})


@router.get("/task_runs", response_model=TaskRunPage)
async def task_runs(analytics: Analytics, f: Filter, limit: Limit = 100, offset: Offset = 0) -> TaskRunPage:
    """Recorded task runs, newest first."""
    return TaskRunPage.model_validate(_page(await _answer(analytics.task_runs(f, limit, offset))))


def _page(page: object) -> dict[str, object]:
    return {k: getattr(page, k) for k in ("items", "total", "limit", "offset")}
