"""The recorder and its spool: batching, idempotent writes, outages (PostgreSQL cut off by a proxy), buffer
overflow, a crashed server's spool adopted and replayed, invalid batches set aside — nothing lost, nothing
written twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from app.core.config import Settings
from app.core.lifecycle import ComponentHealth, ComponentState
from app.services.frame_processor import CameraResult, FrameResult, TrackOut
from app.services.identity.events import IdentityEvent, IdentityEventKind
from app.services.processing_task import TaskState, TaskStatus
from app.stores.history.recorder import HistoryRecorder, RecorderConfig
from app.stores.history.records import TaskRunRecord, TrackingEventRecord, record_from_json, record_to_json
from app.stores.history.repository import build_history_repository
from app.stores.history.service import HistoryService
from app.stores.history.spool import DiskSpool
from app.stores.history.tables import identity_events, task_runs, tracking_events
from tests.history_support import PG_PORT, CuttableProxy, fresh_pg_database, pg_url, sqlite_url

FAST = RecorderConfig(batch_size=20, flush_interval_s=0.05, retry_s=0.1, retry_max_s=0.3, write_timeout_s=5.0)
IMAGE = np.zeros((1, 1, 3), np.uint8)


def frame(i: int, events: list[IdentityEvent] | None = None, cameras: tuple[str, ...] = ("c1", "c2")) -> FrameResult:
    ts = i / 10.0
    cams = [
        CameraResult(
            c, i, ts, [TrackOut(k, k, (10.0 * k, 5, 10.0 * k + 8, 40), 0.9, (k, i / 10)) for k in range(3)], IMAGE
        )
        for c in cameras
    ]
    return FrameResult(i, ts, cams, identity_events=events or [])


def tracking(i: int, task: str = "t1") -> TrackingEventRecord:
    return TrackingEventRecord(i, task, "env", "c1", i, 1, 1, 0, 0, 1, 1, 0.5, None, None, 0.0, 0.1)


async def count(url: str, table: Any, *where: Any) -> tuple[int, int]:
    """(rows, distinct keys) of a table."""
    repo = build_history_repository(Settings(database_url=url))
    try:
        async with repo.engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(table).where(*where))).scalar()
            if table is tracking_events:
                key = select(table.c.task_id, table.c.camera_id, table.c.frame_index, table.c.track_id).distinct()
            else:
                key = select(table.c.task_id, table.c.seq).distinct()
            keys = (await conn.execute(select(func.count()).select_from(key.where(*where).subquery()))).scalar()
            return int(rows or 0), int(keys or 0)
    finally:
        await repo.dispose()


@pytest.fixture
def pg() -> Iterator[str]:
    with fresh_pg_database() as name:
        yield name


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    p = CuttableProxy(PG_PORT)
    try:
        yield p
    finally:
        p.close()


# -- spool ------------------------------------------------------------------------------------------
def test_spool_round_trip_in_sequence_order(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.open()
    run = TaskRunRecord("t", "env", ("c1", "c2"), "COMPLETED", 1.0, 2.0, 3.0, 3.0, 10, 1, "done")
    spool.write(7, [tracking(3)])
    spool.write(2, [tracking(1), run])
    (spool.dir / ".0000000000000001-1.jsonl.tmp").write_text("half a batch")  # a crash mid-write: ignored
    files = spool.pending()
    assert [f.seq for f in files] == [2, 7] and [f.events for f in files] == [2, 1]
    assert spool.read(files[0]) == [tracking(1), run]
    assert record_from_json(record_to_json(run)) == run
    with pytest.raises(ValueError, match="not a history record"):
        record_from_json({"kind": "nope"})
    spool.remove(files[0])
    spool.close()
    assert spool.dir.is_dir()  # still holds a batch: kept for the next start


def test_spool_adopts_a_dead_servers_batches_but_not_a_live_ones(tmp_path: Path) -> None:
    dead = DiskSpool(tmp_path)
    dead.open()
    dead.write(dead.take_seq(), [tracking(1)])
    dead.write(dead.take_seq(), [tracking(2), tracking(3)])
    live = DiskSpool(tmp_path)
    live.open()
    live.write(live.take_seq(), [tracking(9)])
    assert not live.pending()[0].seq > 1  # it adopted nothing: the other server was alive then
    assert dead._lock is not None
    dead._lock.close()  # now that server dies: its lock is gone, its files stay

    heir = DiskSpool(tmp_path)
    heir.open()
    adopted = heir.pending()
    assert [r.ts for f in adopted for r in heir.read(f)] == [1, 2, 3]  # in the dead server's order
    assert heir.next_seq == 3 and not dead.dir.exists() and live.pending()  # the live server keeps its own
    heir.close()
    live.close()


# -- writes -----------------------------------------------------------------------------------------
def test_writes_are_idempotent_and_task_runs_only_move_forward(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "h.db")

    async def go() -> tuple[int, str, int]:
        repo = build_history_repository(Settings(database_url=url))
        await repo.prepare()
        batch = [tracking(i) for i in range(50)]
        newer = TaskRunRecord("t1", "env", ("c1",), "COMPLETED", 0.0, 1.0, 9.0, 9.0, 50, 0)
        older = TaskRunRecord("t1", "env", ("c1",), "PROCESSING", 0.0, 1.0, None, 5.0, 10, 0)
        await repo.write([*batch, newer])
        await repo.write([*batch[10:30], older])  # a replay, and a stale state arriving late
        async with repo.engine.connect() as conn:
            run = (await conn.execute(select(task_runs))).one()
        await repo.dispose()
        rows, _ = await count(url, tracking_events)
        return rows, run.status, run.frames_processed

    assert asyncio.run(go()) == (50, "COMPLETED", 50)


def test_recorder_batches_frames_and_identity_events(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "h.db")

    async def go() -> HistoryRecorder:
        rec = HistoryRecorder(build_history_repository(Settings(database_url=url)), DiskSpool(tmp_path / "s"), FAST)
        await rec.start()
        task = TaskState("t1", "env", ["c1", "c2"])
        h = rec.open_task(task)
        task.set(TaskStatus.PROCESSING)
        h.started(task, fps=10.0, started_ts=1000.0)
        for i in range(100):
            events = [IdentityEvent(IdentityEventKind.CREATED, 1, i / 10.0, "c1", 1)] if i % 10 == 0 else []
            h.frame(frame(i, events))
            if i % 7 == 0:
                await asyncio.sleep(0.01)
        task.set(TaskStatus.COMPLETED)
        h.update(task)
        await rec.stop()
        return rec

    rec = asyncio.run(go())
    c = rec.counters
    assert c.produced == 100 * 2 * 3 + 10 + 3 and c.written == c.produced  # + identity events + 3 run states
    assert c.spooled == c.dropped == c.rejected == 0
    assert asyncio.run(count(url, tracking_events)) == (600, 600)
    assert asyncio.run(count(url, identity_events)) == (10, 10)
    assert not (tmp_path / "s" / rec.spool.dir.name).exists()  # an empty spool is removed at stop


def test_full_buffer_goes_to_the_spool_at_once_and_is_replayed(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "h.db")
    small = RecorderConfig(batch_size=10, buffer_size=30, flush_interval_s=0.05, retry_s=0.05, retry_max_s=0.1)

    async def go() -> HistoryRecorder:
        rec = HistoryRecorder(build_history_repository(Settings(database_url=url)), DiskSpool(tmp_path / "s"), small)
        await rec.start()
        rec.add([tracking(i) for i in range(25)])
        rec.add([tracking(i) for i in range(25, 50)])  # 50 > 30 buffered: all of it to disk, no waiting
        assert rec.buffered == 0
        await asyncio.sleep(0.5)
        await rec.stop()
        return rec

    rec = asyncio.run(go())
    assert rec.counters.spooled == 50 and rec.counters.replayed == 50 and rec.counters.written == 50
    assert asyncio.run(count(url, tracking_events)) == (50, 50)


def test_database_outage_loses_nothing_and_duplicates_nothing(pg: str, proxy: CuttableProxy, tmp_path: Path) -> None:
    """PostgreSQL cut off twice while frames keep coming; everything lands exactly once when it is back."""
    url = pg_url(pg, proxy.port)
    health = ComponentHealth("history_store", essential=False)
    states: list[ComponentState] = []

    async def go() -> HistoryService:
        service = HistoryService(Settings(database_url=url, data_dir=tmp_path, history_retry_s=0.1,
                                          history_retry_max_s=0.3, history_flush_interval_s=0.05,
                                          history_batch_size=25), health)
        await service.start()
        assert health.state is ComponentState.READY
        task = TaskState("t-outage", "env", ["c1", "c2"])
        h = service.recorder.open_task(task)
        h.started(task, fps=10.0)
        loop = asyncio.get_running_loop()
        for i in range(300):
            h.frame(frame(i, [IdentityEvent(IdentityEventKind.LOST, i, i / 10)] if i % 3 == 0 else []))
            if i in (40, 180):
                await loop.run_in_executor(None, proxy.cut)
            if i in (120, 260):
                await asyncio.sleep(0.3)  # let writes fail while cut
                states.append(health.state)
                await loop.run_in_executor(None, proxy.restore)
            await asyncio.sleep(0.005)
        deadline = time.monotonic() + 20
        while (service.recorder.spool_pending or service.recorder.buffered) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        states.append(health.state)
        await service.stop()
        return service

    service = asyncio.run(go())
    c = service.recorder.counters
    assert c.spooled > 0 and c.replayed == c.spooled  # the outages happened, and the spool was replayed
    assert c.produced == c.written and c.dropped == c.rejected == 0
    assert states == [ComponentState.FAILED, ComponentState.FAILED, ComponentState.READY]
    assert health.info["spool_pending"] == 0 and health.info["produced"] == c.produced
    assert asyncio.run(count(pg_url(pg), tracking_events)) == (300 * 2 * 3, 300 * 2 * 3)
    assert asyncio.run(count(pg_url(pg), identity_events)) == (100, 100)
    assert not any(p.is_file() for p in (tmp_path / "spool").rglob("*.jsonl"))


def test_server_down_at_start_then_a_crash_spool_is_replayed_by_the_next_start(
    pg: str, proxy: CuttableProxy, tmp_path: Path
) -> None:
    url = pg_url(pg, proxy.port)
    proxy.cut()
    settings = Settings(database_url=url, data_dir=tmp_path, history_retry_s=0.1, history_flush_interval_s=0.05,
                        history_connect_timeout_s=1.0)

    async def first_life() -> HistoryService:
        service = HistoryService(settings)
        await service.start()  # the database is unreachable: start anyway, spooling
        service.recorder.add([tracking(i, "t-crash") for i in range(120)])
        await asyncio.sleep(0.4)
        assert service.recorder.spool_pending == 120
        return service  # "crash": never stopped

    crashed = asyncio.run(first_life())
    assert crashed.recorder.spool._lock is not None
    crashed.recorder.spool._lock.close()  # what the kernel does when the process dies
    proxy.restore()

    async def second_life() -> HistoryService:
        service = HistoryService(settings)
        await service.start()
        deadline = time.monotonic() + 10
        while service.recorder.spool_pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await service.stop()
        return service

    heir = asyncio.run(second_life())
    assert heir.recorder.counters.replayed == 120
    assert asyncio.run(count(pg_url(pg), tracking_events)) == (120, 120)


def test_a_batch_the_database_refuses_is_set_aside_not_retried(pg: str, tmp_path: Path) -> None:
    url = pg_url(pg)

    async def go() -> HistoryRecorder:
        rec = HistoryRecorder(build_history_repository(Settings(database_url=url)), DiskSpool(tmp_path / "s"), FAST)
        await rec.start()
        rec.add([tracking(1, task="bad\x00id")])  # PostgreSQL text cannot hold NUL: a DataError, not an outage
        await asyncio.sleep(0.3)
        rec.add([tracking(2)])
        await asyncio.sleep(0.3)
        await rec.stop()
        return rec

    rec = asyncio.run(go())
    assert rec.counters.rejected == 1 and rec.counters.written == 1 and rec.counters.dropped == 0
    assert len(list((tmp_path / "s" / "rejected").iterdir())) == 1
    assert asyncio.run(count(url, tracking_events)) == (1, 1)


def test_sqlite_default_lives_in_the_data_dir(tmp_path: Path) -> None:
    service = HistoryService(Settings(data_dir=tmp_path / "data"))

    async def go() -> None:
        await service.start()
        await service.stop()

    asyncio.run(go())
    assert (tmp_path / "data" / "spoton.db").is_file()
    assert service.recorder.stats()["backend"] == "sqlite"



def test_health_component_when_enabled_and_when_disabled(tmp_path: Path) -> None:
    from app.core.lifecycle import Components
    from app.services.environment_catalog import EnvironmentCatalog
    from app.stores.history.service import start_history

    async def go(enabled: bool) -> ComponentHealth:
        components = Components(Settings(), EnvironmentCatalog())
        service = await start_history(Settings(data_dir=tmp_path, history_enabled=enabled), components)
        assert (service is not None) == enabled
        if service is not None:
            await service.stop()
        return components.health["history_store"]

    on, off = asyncio.run(go(True)), asyncio.run(go(False))
    assert on.state is ComponentState.READY and not on.essential and on.device == "sqlite"
    assert on.info["backend"] == "sqlite" and on.info["mode"] == "direct" and on.info["dropped"] == 0
    assert off.state is ComponentState.READY and off.info == {"enabled": False}
