"""Analytics against values computed independently from ground truth, on PostgreSQL and on SQLite.

The fixture is the multiview-dev ground truth (4 cameras, 400 frames at 7 fps, 10 people) played through the
real recorder as if it were the pipeline's output (global id = GT id), with one person's early sightings
under two other ids that are later merged (a chain) — the analytics must count that person once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.api.v1.router import api_router
from app.core.config import Settings
from app.services.processing_task import TaskState, TaskStatus
from app.stores.history.analytics import HistoryAnalytics, HistoryFilter, OccupancyRow
from app.stores.history.recorder import HistoryRecorder, RecorderConfig, RecorderCounters
from app.stores.history.repository import build_history_repository
from app.stores.history.service import HistoryService
from app.stores.history.spool import DiskSpool
from tests.history_support import (
    CAMERAS,
    GT_FPS,
    GroundTruth,
    frame_results,
    fresh_pg_database,
    load_ground_truth,
    pg_url,
    sqlite_url,
    with_merge_chain,
)

T = TypeVar("T")
ENV, TASK = "multiview-dev", "gt-task"
OTHER_ENV, OTHER_TASK, OTHER_FRAMES = "elsewhere", "other-task", 20
T0 = 1_700_000_003.5
"""Playback start of the fixture task (not aligned to buckets on purpose)."""
MERGED_PERSON = 15
GAP_S = 2.05
"""Visit gap for transitions: between 14 and 15 frame periods, so no frame gap sits on the threshold."""


@pytest.fixture(scope="module")
def gt() -> GroundTruth:
    return with_merge_chain(load_ground_truth(), MERGED_PERSON)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, gt: GroundTruth, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database URL holding the fixture (and a second, unrelated task in another environment)."""
    tmp = tmp_path_factory.mktemp(f"analytics-{request.param}")
    database = fresh_pg_database() if request.param == "postgresql" else contextlib.nullcontext("")
    with database as name:
        url = pg_url(name) if request.param == "postgresql" else sqlite_url(tmp / "history.db")
        counters = asyncio.run(_load(url, tmp / "spool", gt))
        assert counters.produced == counters.written > 0
        assert counters.spooled == counters.dropped == counters.rejected == 0
        yield url


async def _load(url: str, spool: Path, gt: GroundTruth) -> RecorderCounters:
    repo = build_history_repository(Settings(database_url=url))
    recorder = HistoryRecorder(repo, DiskSpool(spool), RecorderConfig(batch_size=300, flush_interval_s=0.05))
    await recorder.start()
    plain = GroundTruth(gt.boxes, gt.world, gt.frames)
    runs = ((TASK, ENV, T0, gt, gt.frames), (OTHER_TASK, OTHER_ENV, T0 + 5000, plain, OTHER_FRAMES))
    for task_id, env, origin, truth, last_frame in runs:
        task = TaskState(task_id, env, list(CAMERAS), status=TaskStatus.PROCESSING)
        history = recorder.open_task(task)
        history.started(task, GT_FPS, started_ts=origin)
        for result in frame_results(truth):
            if result.global_frame_index >= last_frame:
                break
            history.frame(result)
            task.stats.frames_processed += 1
            await asyncio.sleep(0)
        task.set(TaskStatus.COMPLETED)
        history.update(task)
    await recorder.stop()
    return recorder.counters


def query(url: str, fn: Callable[[HistoryAnalytics], Awaitable[T]]) -> T:
    async def go() -> T:
        repo = build_history_repository(Settings(database_url=url))
        try:
            return await fn(repo.analytics)
        finally:
            await repo.dispose()

    return asyncio.run(go())


# -- independent expectations from the ground truth files -----------------------------------------
def sightings(gt: GroundTruth) -> Iterator[tuple[str, int, int, float, float]]:
    """(camera, frame, true person id, X m, Y m) of every GT box."""
    for c in CAMERAS:
        for row in gt.boxes[c]:
            f, pid = int(row[0]), int(row[1])
            x, y = gt.world[(f, pid)]
            yield c, f, pid, x, y


def t(frame: int) -> float:
    return T0 + (frame - 1) / GT_FPS


F = HistoryFilter(environment_id=ENV)


# -- tests ------------------------------------------------------------------------------------------
def test_unique_people_per_environment_and_camera(db: str, gt: GroundTruth) -> None:
    got = query(db, lambda a: a.unique_people(F))
    per_cam: dict[str, set[int]] = defaultdict(set)
    for c, _f, pid, _x, _y in sightings(gt):
        per_cam[c].add(pid)
    assert got.people == len(set().union(*per_cam.values())) == 10
    assert {(r.camera_id, r.people) for r in got.per_camera} == {(c, len(p)) for c, p in per_cam.items()}
    # the merged ids are separate people when merges are not resolved
    raw = query(db, lambda a: a.unique_people(HistoryFilter(environment_id=ENV, resolve_merges=False)))
    assert raw.people == 12
    # the other environment's task is filtered out above, and counted without the filter
    other = {pid for c, f, pid, _x, _y in sightings(gt) if f <= OTHER_FRAMES}
    assert query(db, lambda a: a.unique_people(HistoryFilter())).people == 10 + len(other)


def test_person_seconds_and_dwell_per_camera(db: str, gt: GroundTruth) -> None:
    got = {r.camera_id: r for r in query(db, lambda a: a.dwell_cameras(F))}
    rows: dict[str, int] = defaultdict(int)
    people: dict[str, set[int]] = defaultdict(set)
    for c, _f, pid, _x, _y in sightings(gt):
        rows[c] += 1
        people[c].add(pid)
    assert set(got) == set(CAMERAS)
    for c in CAMERAS:
        assert got[c].person_seconds == pytest.approx(rows[c] / GT_FPS, rel=1e-9)
        assert got[c].people == len(people[c])
        assert got[c].mean_dwell_s == pytest.approx(rows[c] / GT_FPS / len(people[c]), rel=1e-9)


def test_dwell_per_person(db: str, gt: GroundTruth) -> None:
    page = query(db, lambda a: a.dwell_people(F, limit=5, offset=0))
    rest = query(db, lambda a: a.dwell_people(F, limit=100, offset=5))
    assert page.total == rest.total == 10 and len(page.items) == 5 and len(rest.items) == 5
    frames: dict[int, set[int]] = defaultdict(set)
    cams: dict[int, set[str]] = defaultdict(set)
    for c, f, pid, _x, _y in sightings(gt):
        frames[pid].add(f)
        cams[pid].add(c)
    got = page.items + rest.items
    assert [p.dwell_s for p in got] == sorted((p.dwell_s for p in got), reverse=True)
    for p in got:
        assert p.task_id == TASK and p.environment_id == ENV
        fs = frames[p.global_id]
        assert p.dwell_s == pytest.approx(len(fs) / GT_FPS, rel=1e-9)
        assert p.first_seen.timestamp() == pytest.approx(t(min(fs)), abs=1e-5)
        assert p.last_seen.timestamp() == pytest.approx(t(max(fs)), abs=1e-5)
        assert p.cameras == len(cams[p.global_id])


@pytest.mark.parametrize("bucket_s", [10.0, 60.0])
def test_occupancy_per_camera_and_environment(db: str, gt: GroundTruth, bucket_s: float) -> None:
    expect_cam: dict[tuple[float, str], set[int]] = defaultdict(set)
    samples_cam: dict[tuple[float, str], int] = defaultdict(int)
    expect_env: dict[float, set[int]] = defaultdict(set)
    frames_env: dict[float, set[tuple[int, int]]] = defaultdict(set)
    for c, f, pid, _x, _y in sightings(gt):
        b = math.floor(t(f) / bucket_s) * bucket_s
        expect_cam[(b, c)].add(pid)
        samples_cam[(b, c)] += 1
        expect_env[b].add(pid)
        frames_env[b].add((f, pid))

    cam = query(db, lambda a: a.occupancy(F, bucket_s, by_camera=True, limit=10_000))
    assert cam.total == len(expect_cam) == len(cam.items)
    for r in cam.items:
        key = (r.bucket_start.timestamp(), r.camera_id)
        assert r.environment_id == ENV
        assert r.people == len(expect_cam[key]), key
        assert r.mean_people == pytest.approx(samples_cam[key] / GT_FPS / bucket_s, rel=1e-9)

    env = query(db, lambda a: a.occupancy(F, bucket_s, by_camera=False, limit=10_000))
    assert [r.bucket_start.timestamp() for r in env.items] == sorted(expect_env)
    for r in env.items:
        b = r.bucket_start.timestamp()
        assert r.camera_id is None
        assert r.people == len(expect_env[b])
        assert r.mean_people == pytest.approx(len(frames_env[b]) / GT_FPS / bucket_s, rel=1e-9)


def _same_rows(got: list[OccupancyRow], want: list[OccupancyRow]) -> None:
    """Equal rows, with float sums compared to rounding (the plan, and so the summing order, may change)."""
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert (g.bucket_start, g.environment_id, g.camera_id, g.people) == (
            w.bucket_start,
            w.environment_id,
            w.camera_id,
            w.people,
        )
        assert g.mean_people == pytest.approx(w.mean_people, rel=1e-9)


def test_per_camera_occupancy_from_the_minute_aggregate_matches_the_events(db: str) -> None:
    """TimescaleDB's tracking_counts_1m cannot be installed here; a plain view with the same definition
    (date_trunc to the minute is time_bucket of one minute) stands in for it, and the aggregate path must give
    what the raw events give, merges resolved."""
    if not db.startswith("postgresql"):
        pytest.skip("the aggregate is a TimescaleDB (PostgreSQL) object")

    async def go() -> tuple[list[OccupancyRow], list[OccupancyRow], list[OccupancyRow]]:
        repo = build_history_repository(Settings(database_url=db))
        try:
            async with repo.engine.begin() as conn:
                await conn.execute(
                    text(
                        "CREATE VIEW tracking_counts_1m AS SELECT date_trunc('minute', time) AS bucket, "
                        "environment_id, camera_id, task_id, global_id, count(*) AS detections, "
                        "sum(sample_s) AS person_seconds "
                        "FROM tracking_events GROUP BY 1, 2, 3, 4, 5"
                    )
                )
            raw = await repo.analytics.occupancy(F, 120.0, by_camera=True, limit=10_000)
            repo.analytics.use_aggregate = True
            agg = await repo.analytics.occupancy(F, 120.0, by_camera=True, limit=10_000)
            odd = await repo.analytics.occupancy(F, 90.0, by_camera=True, limit=10_000)  # not whole minutes: raw
            return raw.items, agg.items, odd.items
        finally:
            async with repo.engine.begin() as conn:
                await conn.execute(text("DROP VIEW IF EXISTS tracking_counts_1m"))
            await repo.dispose()

    raw, agg, odd = asyncio.run(go())
    assert raw and len({r.camera_id for r in raw}) == len(CAMERAS)
    _same_rows(agg, raw)
    assert odd and odd[0].bucket_start.timestamp() % 90 == 0


def test_occupancy_pages_and_time_range(db: str, gt: GroundTruth) -> None:
    full = query(db, lambda a: a.occupancy(F, 10.0, by_camera=True, limit=10_000))
    first = query(db, lambda a: a.occupancy(F, 10.0, by_camera=True, limit=7, offset=0))
    second = query(db, lambda a: a.occupancy(F, 10.0, by_camera=True, limit=7, offset=7))
    assert first.total == second.total == full.total
    _same_rows(first.items + second.items, full.items[:14])

    start = datetime.fromtimestamp(t(71), UTC)  # frames 71..140 inclusive
    end = datetime.fromtimestamp(t(141), UTC)
    window = HistoryFilter(environment_id=ENV, start=start, end=end)
    got = query(db, lambda a: a.unique_people(window))
    assert got.people == len({pid for _c, f, pid, _x, _y in sightings(gt) if 71 <= f <= 140})
    dwell = query(db, lambda a: a.dwell_cameras(window))
    rows = sum(1 for c, f, *_ in sightings(gt) if c == "c2" and 71 <= f <= 140)
    assert next(d for d in dwell if d.camera_id == "c2").person_seconds == pytest.approx(rows / GT_FPS, rel=1e-9)


def test_trajectory_of_a_person_downsampled(db: str, gt: GroundTruth) -> None:
    person = MERGED_PERSON  # its early sightings were recorded under the two merged ids
    f = HistoryFilter(environment_id=ENV, task_id=TASK)
    page = query(db, lambda a: a.trajectory(f, person, 1.0, limit=10_000))
    points: dict[float, list[tuple[float, float, str]]] = defaultdict(list)
    for c, fr, pid, x, y in sightings(gt):
        if pid == person:
            points[math.floor(t(fr))].append((x, y, c))
    assert page.total == len(points) == len(page.items)
    for p in page.items:
        pts = points[p.time.timestamp()]
        assert p.samples == len(pts)
        assert p.cameras == len({c for *_xy, c in pts})
        assert p.x == pytest.approx(statistics.fmean(x for x, _y, _c in pts), abs=1e-9)
        assert p.y == pytest.approx(statistics.fmean(y for _x, y, _c in pts), abs=1e-9)
    with pytest.raises(ValueError, match="task_id"):
        query(db, lambda a: a.trajectory(F, person, 1.0))


def test_heatmap_counts_each_person_frame_once(db: str, gt: GroundTruth) -> None:
    page = query(db, lambda a: a.heatmap(F, 1.0))
    expect: dict[tuple[int, int], int] = defaultdict(int)
    for fr, pid in {(fr, pid) for _c, fr, pid, _x, _y in sightings(gt)}:
        x, y = gt.world[(fr, pid)]
        expect[(math.floor(x), math.floor(y))] += 1
    got = {(c.ix, c.iy): c for c in page.items}
    assert {k: c.samples for k, c in got.items()} == dict(expect)
    assert sum(c.samples for c in page.items) == sum(expect.values())
    for (ix, iy), c in got.items():
        assert (c.x_min, c.y_min) == (ix * 1.0, iy * 1.0)
        assert c.person_seconds == pytest.approx(c.samples / GT_FPS, rel=1e-9)


def test_camera_transitions_with_travel_times(db: str, gt: GroundTruth) -> None:
    got = {(r.from_camera, r.to_camera): r for r in query(db, lambda a: a.transitions(F, GAP_S))}
    # independent: visits per (person, camera) from frame runs, consecutive by start, camera changes
    frames: dict[tuple[int, str], list[int]] = defaultdict(list)
    for c, fr, pid, _x, _y in sightings(gt):
        frames[(pid, c)].append(fr)
    visits: dict[int, list[tuple[int, str, int]]] = defaultdict(list)
    for (pid, c), fs in frames.items():
        fs.sort()
        start = prev = fs[0]
        for fr in fs[1:]:
            if (fr - prev) / GT_FPS > GAP_S:
                visits[pid].append((start, c, prev))
                start = fr
            prev = fr
        visits[pid].append((start, c, prev))
    travel: dict[tuple[str, str], list[float]] = defaultdict(list)
    for vs in visits.values():
        vs.sort()
        for (_s0, c0, e0), (s1, c1, _e1) in itertools.pairwise(vs):
            if c0 != c1:
                travel[(c0, c1)].append((s1 - e0) / GT_FPS)
    assert set(got) == set(travel)
    assert sum(r.count for r in got.values()) > 10
    for key, times in travel.items():
        r = got[key]
        assert r.environment_id == ENV
        assert r.count == len(times), key
        assert r.mean_travel_s == pytest.approx(statistics.fmean(times), abs=1e-6)
        assert r.median_travel_s == pytest.approx(statistics.median(times), abs=1e-6)
        assert r.min_travel_s == pytest.approx(min(times), abs=1e-6)
        assert r.max_travel_s == pytest.approx(max(times), abs=1e-6)


def test_task_runs_are_recorded(db: str) -> None:
    page = query(db, lambda a: a.task_runs(HistoryFilter()))
    runs = {r.task_id: r for r in page.items}
    assert set(runs) == {TASK, OTHER_TASK} and page.total == 2
    assert runs[TASK].status == "COMPLETED" and runs[TASK].frames_processed == 400
    assert runs[TASK].started_at is not None and runs[TASK].started_at.timestamp() == pytest.approx(T0, abs=1e-5)
    assert runs[TASK].ended_at is not None and runs[TASK].camera_ids == list(CAMERAS)
    assert query(db, lambda a: a.task_runs(HistoryFilter(environment_id=OTHER_ENV))).items[0].task_id == OTHER_TASK


def test_bad_parameters_are_clear_errors(db: str) -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        query(db, lambda a: a.occupancy(F, 0.0, by_camera=True))
    with pytest.raises(ValueError, match="time zone"):
        HistoryFilter(start=datetime(2024, 1, 1))
    # a range that ends before it starts is empty (half-open), not an error: schema-valid requests are answered
    backwards = HistoryFilter(
        environment_id=ENV, start=datetime(2024, 1, 2, tzinfo=UTC), end=datetime(2024, 1, 1, tzinfo=UTC)
    )
    assert query(db, lambda a: a.unique_people(backwards)).people == 0


# -- the HTTP API over the same data ------------------------------------------------------------------
@pytest.fixture
def client(db: str, tmp_path: Path) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(api_router)
    app.state.history = HistoryService(Settings(database_url=db, data_dir=tmp_path))
    with TestClient(app) as c:
        yield c
    asyncio.run(app.state.history.repository.dispose())


def test_api_answers_with_schemas_and_pages(client: TestClient, gt: GroundTruth) -> None:
    base = "/api/v1/analytics_data"
    r = client.get(f"{base}/unique_people", params={"environment_id": ENV})
    assert r.status_code == 200 and r.json()["people"] == 10

    params = {"environment_id": ENV, "scope": "environment", "bucket_s": 10, "limit": 3}
    r = client.get(f"{base}/occupancy", params=params)
    body = r.json()
    assert r.status_code == 200 and len(body["items"]) == 3 and body["total"] > 3 and body["bucket_s"] == 10
    assert body["items"][0]["camera_id"] is None

    start = datetime.fromtimestamp(t(71), UTC).isoformat().replace("+00:00", "Z")
    end = datetime.fromtimestamp(t(141), UTC).replace(tzinfo=None).isoformat()  # no zone: UTC
    r = client.get(f"{base}/unique_people", params={"environment_id": ENV, "from": start, "to": end})
    assert r.json()["people"] == len({pid for _c, f, pid, _x, _y in sightings(gt) if 71 <= f <= 140})

    r = client.get(f"{base}/dwell/people", params={"environment_id": ENV, "limit": 2, "offset": 1})
    assert r.json()["total"] == 10 and len(r.json()["items"]) == 2
    r = client.get(f"{base}/dwell/cameras", params={"environment_id": ENV})
    assert {i["camera_id"] for i in r.json()["items"]} == set(CAMERAS)
    r = client.get(f"{base}/trajectory/{MERGED_PERSON}", params={"task_id": TASK, "bucket_s": 5})
    assert r.status_code == 200 and r.json()["items"] and r.json()["global_id"] == MERGED_PERSON
    r = client.get(f"{base}/heatmap", params={"environment_id": ENV, "cell_m": 2})
    assert r.status_code == 200 and r.json()["cell_m"] == 2 and r.json()["items"]
    r = client.get(f"{base}/transitions", params={"environment_id": ENV, "gap_s": GAP_S})
    assert r.status_code == 200 and r.json()["gap_s"] == GAP_S and r.json()["items"]
    r = client.get(f"{base}/task_runs")
    assert r.json()["total"] == 2

    # bad input: clear 422s
    assert client.get(f"{base}/trajectory/{MERGED_PERSON}").status_code == 422
    assert client.get(f"{base}/occupancy", params={"bucket_s": 0}).status_code == 422
    r = client.get(f"{base}/unique_people", params={"from": "2024-01-02T00:00:00Z", "to": "2024-01-01T00:00:00Z"})
    assert r.status_code == 200 and r.json()["people"] == 0  # an empty range: empty results
    assert client.get(f"{base}/unique_people", params={"to": "0.5"}).status_code == 422  # ISO 8601 only
    assert client.get(f"{base}/heatmap", params={"cell_m": 2.2e-309}).status_code == 422  # no DataError downstream
    assert client.get(f"{base}/dwell/people", params={"offset": 10**30}).status_code == 422  # no overflow 500
    detail = client.get(f"{base}/trajectory/{MERGED_PERSON}").json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"][-1] == "task_id"  # FastAPI's documented 422 shape
    assert client.get(f"{base}/occupancy", params={"scope": "room"}).status_code == 422

    schema = client.get("/openapi.json").json()
    assert f"{base}/occupancy" in schema["paths"] and "OccupancyPage" in schema["components"]["schemas"]


def test_api_without_history_says_so(tmp_path: Path) -> None:
    app = FastAPI()
    app.include_router(api_router)
    app.state.history = None
    with TestClient(app) as c:
        r = c.get("/api/v1/analytics_data/unique_people")
    assert r.status_code == 503 and "disabled" in r.text
