"""Analytics over the history, computed in the database (SQLAlchemy Core; PostgreSQL and SQLite alike).

Definitions (all times are event times: playback start + video timestamp, so durations are video seconds):
- a **person** is (task, global id) — global ids are only unique within a task — with ids that were later
  merged into another (``identity_events`` kind ``merged``, followed through chains) counted as the id they
  were merged into;
- a **person-frame** is a person in one processed frame; it stands for ``sample_s`` seconds (video time since
  the task's previous processed frame, skipped frames included), so person-seconds = sum of ``sample_s``;
- **buckets** are aligned on the epoch (``floor(ts / bucket_s)``), like TimescaleDB's ``time_bucket``;
- a **visit** of a person to a camera is a run of sightings with no gap longer than ``gap_s``; a
  **transition** A → B is two consecutive visits of one person (ordered by start) in different cameras, with
  travel time = B's start − A's end (negative when the views overlap and the person was in both at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Integer,
    Select,
    String,
    and_,
    case,
    cast,
    column,
    distinct,
    exists,
    func,
    literal,
    or_,
    select,
    table,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from app.stores.history.records import epoch_to_datetime
from app.stores.history.tables import identity_events, task_runs, tracking_events
from app.stores.history.timescale import AGGREGATE_BUCKET_S

T = TypeVar("T")
MAX_MERGE_CHAIN = 64


@dataclass(slots=True, frozen=True)
class HistoryFilter:
    environment_id: str | None = None
    task_id: str | None = None
    start: datetime | None = None
    """Inclusive."""
    end: datetime | None = None
    """Exclusive."""
    resolve_merges: bool = True

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"'{name}' needs a time zone (e.g. 2024-01-01T00:00:00Z)")


@dataclass(slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


@dataclass(slots=True, frozen=True)
class OccupancyRow:
    bucket_start: datetime
    environment_id: str
    camera_id: str | None
    people: int
    """Distinct people seen in the bucket."""
    mean_people: float
    """Person-seconds in the bucket / bucket length: the average number of people present."""


@dataclass(slots=True, frozen=True)
class CameraCount:
    environment_id: str
    camera_id: str
    people: int


@dataclass(slots=True)
class UniquePeople:
    people: int
    per_camera: list[CameraCount] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class PersonDwell:
    task_id: str
    environment_id: str
    global_id: int
    first_seen: datetime
    last_seen: datetime
    dwell_s: float
    """Person-seconds: time seen by at least one camera."""
    cameras: int


@dataclass(slots=True, frozen=True)
class CameraDwell:
    environment_id: str
    camera_id: str
    people: int
    person_seconds: float
    mean_dwell_s: float


@dataclass(slots=True, frozen=True)
class TrajectoryPoint:
    time: datetime
    x: float
    y: float
    samples: int
    cameras: int


@dataclass(slots=True, frozen=True)
class HeatmapCell:
    ix: int
    iy: int
    x_min: float
    y_min: float
    samples: int
    """Person-frames whose position (mean over the cameras that saw the person) falls in the cell."""
    person_seconds: float


@dataclass(slots=True, frozen=True)
class Transition:
    environment_id: str
    from_camera: str
    to_camera: str
    count: int
    mean_travel_s: float
    median_travel_s: float
    min_travel_s: float
    max_travel_s: float


@dataclass(slots=True, frozen=True)
class TaskRun:
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


AGGREGATE = table(
    "tracking_counts_1m",
    column("bucket"),
    column("environment_id"),
    column("camera_id"),
    column("task_id"),
    column("global_id"),
    column("person_seconds"),
)
"""TimescaleDB's per-minute continuous aggregate (``timescale.py``): one row per person, camera and minute."""


class HistoryAnalytics:
    def __init__(self, engine: AsyncEngine, use_aggregate: bool = False) -> None:
        self.engine = engine
        self.use_aggregate = use_aggregate
        """Per-camera occupancy in whole minutes reads ``tracking_counts_1m`` (set when TimescaleDB is applied)."""

    # -- building blocks ------------------------------------------------------------------------
    def _merge_map(self, f: HistoryFilter) -> FromClause:
        """(task_id, src, dst): each merged-away id and the id it finally lives on as."""
        ie, nxt, later = identity_events, identity_events.alias("nxt"), identity_events.alias("later")
        base = select(
            ie.c.task_id, ie.c.other_id.label("src"), ie.c.global_id.label("dst"), literal(1).label("depth")
        ).where(ie.c.event == "merged", ie.c.other_id.is_not(None))
        if f.task_id is not None:
            base = base.where(ie.c.task_id == f.task_id)
        if f.environment_id is not None:
            base = base.where(ie.c.environment_id == f.environment_id)
        chain = base.cte("merge_chain", recursive=True)
        chain = chain.union_all(
            select(chain.c.task_id, chain.c.src, nxt.c.global_id, chain.c.depth + 1).where(
                nxt.c.task_id == chain.c.task_id,
                nxt.c.event == "merged",
                nxt.c.other_id == chain.c.dst,
                chain.c.depth < MAX_MERGE_CHAIN,
            )
        )
        merged_again = exists().where(
            later.c.task_id == chain.c.task_id, later.c.event == "merged", later.c.other_id == chain.c.dst
        )
        return (
            select(chain.c.task_id, chain.c.src, func.min(chain.c.dst).label("dst"))
            .where(~merged_again)
            .group_by(chain.c.task_id, chain.c.src)
            .subquery("merges")
        )

    def _filtered(
        self, source: FromClause, time: ColumnElement[Any], f: HistoryFilter
    ) -> tuple[FromClause, ColumnElement[Any], list[ColumnElement[bool]]]:
        """``source`` (events or the per-minute aggregate) joined to the merge map when merges are resolved, the
        person column (global id after merges) and the filter's conditions on ``time``."""
        c = source.c
        conds: list[ColumnElement[bool]] = []
        if f.environment_id is not None:
            conds.append(c.environment_id == f.environment_id)
        if f.task_id is not None:
            conds.append(c.task_id == f.task_id)
        if f.start is not None:
            conds.append(time >= f.start)
        if f.end is not None:
            conds.append(time < f.end)
        person: ColumnElement[Any] = c.global_id
        if f.resolve_merges:
            m = self._merge_map(f)
            source = source.outerjoin(m, and_(m.c.task_id == c.task_id, m.c.src == c.global_id))
            person = func.coalesce(m.c.dst, c.global_id)
        return source, person, conds

    def _events(self, f: HistoryFilter, with_position: bool = False) -> FromClause:
        """Tracking events in the filter, with ``person_id`` (the global id after merges)."""
        te = tracking_events
        source, person, conds = self._filtered(te, te.c.time, f)
        if with_position:
            conds.append(te.c.map_x.is_not(None))
            conds.append(te.c.map_y.is_not(None))
        return (
            select(
                te.c.ts,
                te.c.task_id,
                te.c.environment_id,
                te.c.camera_id,
                person.label("person_id"),
                te.c.map_x,
                te.c.map_y,
                te.c.sample_s,
            )
            .select_from(source)
            .where(*conds)
            .subquery("ev")
        )

    async def _page(self, stmt: Select, limit: int, offset: int) -> tuple[Sequence[Any], int]:
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        async with self.engine.connect() as conn:
            total = (await conn.execute(select(func.count()).select_from(stmt.order_by(None).subquery()))).scalar()
            rows = (await conn.execute(stmt.limit(limit).offset(offset))).all()
        return rows, int(total or 0)

    async def _all(self, stmt: Select) -> Sequence[Any]:
        async with self.engine.connect() as conn:
            return (await conn.execute(stmt)).all()

    # -- queries --------------------------------------------------------------------------------
    async def occupancy(
        self, f: HistoryFilter, bucket_s: float, by_camera: bool, limit: int = 1000, offset: int = 0
    ) -> Page[OccupancyRow]:
        """Per bucket (and camera, or the whole environment): distinct people and mean people present."""
        _positive(bucket_s=bucket_s)
        if by_camera and self._aggregate_fits(f, bucket_s):
            return await self._occupancy_from_aggregate(f, bucket_s, limit, offset)
        ev = self._events(f)
        keys: list[ColumnElement[Any]] = [func.floor(ev.c.ts / bucket_s).label("bucket"), ev.c.environment_id]
        if by_camera:
            keys.append(ev.c.camera_id)
        person_key = ev.c.task_id + literal(":") + cast(ev.c.person_id, String)
        # One row per person-frame in each group (a person seen by several cameras counts once per frame).
        frames = (
            select(*keys, person_key.label("person"), ev.c.ts, ev.c.sample_s.label("seconds"))
            .distinct()
            .subquery("pf")
        )
        return await self._occupancy_page(frames, bucket_s, by_camera, limit, offset)

    async def _occupancy_page(
        self, rows: FromClause, bucket_s: float, by_camera: bool, limit: int, offset: int
    ) -> Page[OccupancyRow]:
        """Occupancy from ``rows`` (``bucket``, ``environment_id``, [``camera_id``], ``person``, ``seconds``):
        distinct people and person-seconds / bucket length per group."""
        group = [rows.c.bucket, rows.c.environment_id] + ([rows.c.camera_id] if by_camera else [])
        stmt = (
            select(
                *group,
                func.count(distinct(rows.c.person)).label("people"),
                (func.sum(rows.c.seconds) / bucket_s).label("mean_people"),
            )
            .group_by(*group)
            .order_by(*group)
        )
        page, total = await self._page(stmt, limit, offset)
        items = [
            OccupancyRow(
                epoch_to_datetime(float(r.bucket) * bucket_s),
                r.environment_id,
                r.camera_id if by_camera else None,
                int(r.people),
                float(r.mean_people),
            )
            for r in page
        ]
        return Page(items, total, limit, offset)

    def _aggregate_fits(self, f: HistoryFilter, bucket_s: float) -> bool:
        """The aggregate answers exactly when buckets and the time range are whole minutes."""
        if not self.use_aggregate or bucket_s % AGGREGATE_BUCKET_S != 0:
            return False
        return all(t is None or t.timestamp() % AGGREGATE_BUCKET_S == 0 for t in (f.start, f.end))

    async def _occupancy_from_aggregate(
        self, f: HistoryFilter, bucket_s: float, limit: int, offset: int
    ) -> Page[OccupancyRow]:
        """Per-camera occupancy from one row per person and minute instead of one per person-frame (hundreds
        of times fewer rows over long ranges; the aggregate is real-time, so the newest minutes are included)."""
        agg = AGGREGATE
        source, person, conds = self._filtered(agg, agg.c.bucket, f)
        minutes = (
            select(
                func.floor(func.extract("epoch", agg.c.bucket) / bucket_s).label("bucket"),
                agg.c.environment_id,
                agg.c.camera_id,
                (agg.c.task_id + literal(":") + cast(person, String)).label("person"),
                agg.c.person_seconds.label("seconds"),
            )
            .select_from(source)
            .where(*conds)
            .subquery("pm")
        )
        return await self._occupancy_page(minutes, bucket_s, True, limit, offset)

    async def unique_people(self, f: HistoryFilter) -> UniquePeople:
        ev = self._events(f)
        people = select(ev.c.task_id, ev.c.person_id).distinct().subquery("people")
        per_cam = select(ev.c.environment_id, ev.c.camera_id, ev.c.task_id, ev.c.person_id).distinct().subquery("pc")
        total = (await self._all(select(func.count()).select_from(people)))[0][0]
        rows = await self._all(
            select(per_cam.c.environment_id, per_cam.c.camera_id, func.count().label("people"))
            .group_by(per_cam.c.environment_id, per_cam.c.camera_id)
            .order_by(per_cam.c.environment_id, per_cam.c.camera_id)
        )
        return UniquePeople(int(total), [CameraCount(r.environment_id, r.camera_id, int(r.people)) for r in rows])

    async def dwell_people(self, f: HistoryFilter, limit: int = 100, offset: int = 0) -> Page[PersonDwell]:
        """Per person: first and last sighting, person-seconds seen, cameras; longest first."""
        ev = self._events(f)
        frames = select(ev.c.task_id, ev.c.environment_id, ev.c.person_id, ev.c.ts, ev.c.sample_s).distinct()
        pf = frames.subquery("pf")
        cams = (
            select(ev.c.task_id, ev.c.person_id, func.count(distinct(ev.c.camera_id)).label("cameras"))
            .group_by(ev.c.task_id, ev.c.person_id)
            .subquery("pc")
        )
        dwell = func.sum(pf.c.sample_s)
        per_person = (
            select(
                pf.c.task_id,
                func.min(pf.c.environment_id).label("environment_id"),
                pf.c.person_id,
                func.min(pf.c.ts).label("first_ts"),
                func.max(pf.c.ts).label("last_ts"),
                dwell.label("dwell_s"),
            )
            .group_by(pf.c.task_id, pf.c.person_id)
            .subquery("pp")
        )
        same_person = and_(cams.c.task_id == per_person.c.task_id, cams.c.person_id == per_person.c.person_id)
        stmt = (
            select(per_person, cams.c.cameras)
            .join_from(per_person, cams, same_person)
            .order_by(per_person.c.dwell_s.desc(), per_person.c.task_id, per_person.c.person_id)
        )
        rows, total = await self._page(stmt, limit, offset)
        items = [
            PersonDwell(
                r.task_id,
                r.environment_id,
                int(r.person_id),
                epoch_to_datetime(float(r.first_ts)),
                epoch_to_datetime(float(r.last_ts)),
                float(r.dwell_s),
                int(r.cameras),
            )
            for r in rows
        ]
        return Page(items, total, limit, offset)

    async def dwell_cameras(self, f: HistoryFilter) -> list[CameraDwell]:
        """Per camera: people seen, person-seconds, and mean dwell per person."""
        ev = self._events(f)
        pf = (
            select(ev.c.environment_id, ev.c.camera_id, ev.c.task_id, ev.c.person_id, ev.c.ts, ev.c.sample_s)
            .distinct()
            .subquery("pf")
        )
        person_key = pf.c.task_id + literal(":") + cast(pf.c.person_id, String)
        rows = await self._all(
            select(
                pf.c.environment_id,
                pf.c.camera_id,
                func.count(distinct(person_key)).label("people"),
                func.sum(pf.c.sample_s).label("person_seconds"),
            )
            .group_by(pf.c.environment_id, pf.c.camera_id)
            .order_by(pf.c.environment_id, pf.c.camera_id)
        )
        return [
            CameraDwell(
                r.environment_id,
                r.camera_id,
                int(r.people),
                float(r.person_seconds),
                float(r.person_seconds) / int(r.people) if r.people else 0.0,
            )
            for r in rows
        ]

    async def trajectory(
        self, f: HistoryFilter, global_id: int, bucket_s: float, limit: int = 1000, offset: int = 0
    ) -> Page[TrajectoryPoint]:
        """Map positions (metres) of one person of one task, averaged per bucket (server-side downsampling)."""
        if f.task_id is None:
            raise ValueError("a trajectory needs task_id: global ids are unique only within a task")
        _positive(bucket_s=bucket_s)
        ev = self._events(f, with_position=True)
        bucket = func.floor(ev.c.ts / bucket_s)
        stmt = (
            select(
                bucket.label("bucket"),
                func.avg(ev.c.map_x).label("x"),
                func.avg(ev.c.map_y).label("y"),
                func.count().label("samples"),
                func.count(distinct(ev.c.camera_id)).label("cameras"),
            )
            .where(ev.c.person_id == global_id)
            .group_by(bucket)
            .order_by(bucket)
        )
        rows, total = await self._page(stmt, limit, offset)
        items = [
            TrajectoryPoint(
                epoch_to_datetime(float(r.bucket) * bucket_s), float(r.x), float(r.y), int(r.samples), int(r.cameras)
            )
            for r in rows
        ]
        return Page(items, total, limit, offset)

    async def heatmap(self, f: HistoryFilter, cell_m: float, limit: int = 10000, offset: int = 0) -> Page[HeatmapCell]:
        """Person-frames per map cell of ``cell_m`` metres (cell (i, j) spans [i·cell, (i+1)·cell) in x, y)."""
        _positive(cell_m=cell_m)
        ev = self._events(f, with_position=True)
        pf = (
            select(
                ev.c.task_id,
                ev.c.person_id,
                ev.c.ts,
                func.min(ev.c.sample_s).label("sample_s"),
                func.avg(ev.c.map_x).label("x"),
                func.avg(ev.c.map_y).label("y"),
            )
            .group_by(ev.c.task_id, ev.c.person_id, ev.c.ts)
            .subquery("pf")
        )
        ix = cast(func.floor(pf.c.x / cell_m), Integer).label("ix")
        iy = cast(func.floor(pf.c.y / cell_m), Integer).label("iy")
        stmt = (
            select(ix, iy, func.count().label("samples"), func.sum(pf.c.sample_s).label("person_seconds"))
            .group_by(ix, iy)
            .order_by(ix, iy)
        )
        rows, total = await self._page(stmt, limit, offset)
        items = [
            HeatmapCell(
                int(r.ix), int(r.iy), int(r.ix) * cell_m, int(r.iy) * cell_m, int(r.samples), float(r.person_seconds)
            )
            for r in rows
        ]
        return Page(items, total, limit, offset)

    async def transitions(self, f: HistoryFilter, gap_s: float) -> list[Transition]:
        """Camera → camera transitions of people, with counts and travel times (see the module docstring)."""
        _positive(gap_s=gap_s)
        ev = self._events(f)
        pc = select(ev.c.task_id, ev.c.environment_id, ev.c.person_id, ev.c.camera_id, ev.c.ts).distinct().subquery()
        per_cam = (pc.c.task_id, pc.c.person_id, pc.c.camera_id)
        prev_ts = func.lag(pc.c.ts).over(partition_by=per_cam, order_by=pc.c.ts)
        flagged = select(
            pc,
            case((or_(prev_ts.is_(None), pc.c.ts - prev_ts > gap_s), 1), else_=0).label("new_visit"),
        ).subquery("flagged")
        visit_no = func.sum(flagged.c.new_visit).over(
            partition_by=(flagged.c.task_id, flagged.c.person_id, flagged.c.camera_id),
            order_by=flagged.c.ts,
            rows=(None, 0),
        )
        numbered = select(flagged, visit_no.label("visit_no")).subquery("numbered")
        visits = (
            select(
                numbered.c.task_id,
                func.min(numbered.c.environment_id).label("environment_id"),
                numbered.c.person_id,
                numbered.c.camera_id,
                func.min(numbered.c.ts).label("start_ts"),
                func.max(numbered.c.ts).label("end_ts"),
            )
            .group_by(numbered.c.task_id, numbered.c.person_id, numbered.c.camera_id, numbered.c.visit_no)
            .subquery("visits")
        )
        person = (visits.c.task_id, visits.c.person_id)
        order = (visits.c.start_ts, visits.c.camera_id)
        ordered = select(
            visits.c.environment_id,
            visits.c.camera_id,
            visits.c.start_ts,
            func.lag(visits.c.camera_id).over(partition_by=person, order_by=order).label("prev_camera"),
            func.lag(visits.c.end_ts).over(partition_by=person, order_by=order).label("prev_end"),
        ).subquery("ordered")
        moves = (
            select(
                ordered.c.environment_id,
                ordered.c.prev_camera.label("from_camera"),
                ordered.c.camera_id.label("to_camera"),
                (ordered.c.start_ts - ordered.c.prev_end).label("travel_s"),
            )
            .where(ordered.c.prev_camera.is_not(None), ordered.c.prev_camera != ordered.c.camera_id)
            .subquery("moves")
        )
        pair = (moves.c.environment_id, moves.c.from_camera, moves.c.to_camera)
        ranked = select(
            moves,
            func.row_number().over(partition_by=pair, order_by=moves.c.travel_s).label("rn"),
            func.count().over(partition_by=pair).label("n"),
        ).subquery("ranked")
        middle = or_(ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.rn == (ranked.c.n + 2) // 2)
        group = (ranked.c.environment_id, ranked.c.from_camera, ranked.c.to_camera)
        rows = await self._all(
            select(
                *group,
                func.count().label("count"),
                func.avg(ranked.c.travel_s).label("mean"),
                func.avg(case((middle, ranked.c.travel_s))).label("median"),
                func.min(ranked.c.travel_s).label("min"),
                func.max(ranked.c.travel_s).label("max"),
            )
            .group_by(*group)
            .order_by(*group)
        )
        return [
            Transition(
                r.environment_id,
                r.from_camera,
                r.to_camera,
                int(r.count),
                float(r.mean),
                float(r.median),
                float(r.min),
                float(r.max),
            )
            for r in rows
        ]

    async def task_runs(self, f: HistoryFilter, limit: int = 100, offset: int = 0) -> Page[TaskRun]:
        tr = task_runs
        conds: list[ColumnElement[bool]] = []
        if f.environment_id is not None:
            conds.append(tr.c.environment_id == f.environment_id)
        if f.task_id is not None:
            conds.append(tr.c.task_id == f.task_id)
        if f.start is not None:
            conds.append(or_(tr.c.ended_at.is_(None), tr.c.ended_at >= f.start))
        if f.end is not None:
            conds.append(tr.c.created_at < f.end)
        stmt = select(tr).where(*conds).order_by(tr.c.created_at.desc(), tr.c.task_id)
        rows, total = await self._page(stmt, limit, offset)
        items = [
            TaskRun(
                r.task_id,
                r.environment_id,
                list(r.camera_ids),
                r.status,
                r.details,
                r.created_at,
                r.started_at,
                r.ended_at,
                r.frames_processed,
                r.frames_skipped,
            )
            for r in rows
        ]
        return Page(items, total, limit, offset)


def _positive(**values: float) -> None:
    for name, v in values.items():
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v}")
