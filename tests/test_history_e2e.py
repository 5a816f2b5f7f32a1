"""End to end: a real server and a real task write their history to PostgreSQL while PostgreSQL is cut off
(a proxy in front of it closes, then reopens); every event the task produced is in the tables exactly once,
the spool is empty, and the analytics API answers from the same data."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.core.config import Settings
from app.stores.history.repository import build_history_repository
from app.stores.history.tables import identity_events, task_runs, tracking_events
from tests.history_support import PG_PORT, CuttableProxy, fresh_pg_database, pg_url
from tests.live_server import live_server
from tests.test_e2e import collect, make_clip

pytestmark = pytest.mark.e2e
N_FRAMES = 35  # 5 s of the 7 fps derived cameras
CAMERAS = ["c1", "c2"]


def _history(base: str) -> dict[str, Any]:
    info: dict[str, Any] = httpx.get(base + "/health", timeout=10).json()["components"]["history_store"]
    return info


async def _rows(url: str, task_id: str) -> dict[str, Any]:
    repo = build_history_repository(Settings(database_url=url))
    try:
        async with repo.engine.connect() as conn:
            te = tracking_events
            key = select(te.c.camera_id, te.c.frame_index, te.c.track_id, te.c.global_id)
            keys = (await conn.execute(key.where(te.c.task_id == task_id))).all()
            ie = identity_events
            events = (
                await conn.execute(select(ie.c.seq, ie.c.event, ie.c.global_id).where(ie.c.task_id == task_id))
            ).all()
            run = (await conn.execute(select(task_runs).where(task_runs.c.task_id == task_id))).one()
            total = (await conn.execute(select(func.count()).select_from(te))).scalar()
        return {"keys": keys, "events": sorted(events), "run": run, "total": total}
    finally:
        await repo.dispose()


def test_task_history_survives_a_database_outage(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, N_FRAMES)
    with fresh_pg_database() as name:
        proxy = CuttableProxy(PG_PORT)
        try:
            settings = Settings(
                environments_dir=tmp_path / "none",
                extra_environments=[clip],
                data_dir=tmp_path / "data",
                playback_speed=0.0,
                publish_queue_size=10_000,
                database_url=pg_url(name, proxy.port),
                history_batch_size=20,
                history_flush_interval_s=0.1,
                history_retry_s=0.2,
                history_retry_max_s=0.5,
            )
            with live_server(settings) as base:
                assert _history(base)["state"] == "ready"
                body = {"environment_id": "clip", "camera_ids": CAMERAS}
                r = httpx.post(base + "/api/v1/processing-tasks/start", json=body)
                assert r.status_code == 202
                started = r.json()
                task_id = started["task_id"]
                ws: list[Any] = []
                reader = threading.Thread(target=lambda: ws.append(asyncio.run(collect(started["websocket_url"]))))
                reader.start()

                deadline = time.monotonic() + 120
                while _history(base)["info"].get("produced", 0) < 10 and time.monotonic() < deadline:
                    time.sleep(0.05)
                proxy.cut()  # PostgreSQL unreachable while the task runs
                while _history(base)["state"] != "failed" and time.monotonic() < deadline:
                    time.sleep(0.05)
                degraded = httpx.get(base + "/health", timeout=10).json()
                time.sleep(1.5)
                proxy.restore()

                reader.join(timeout=300)
                status = httpx.get(started["status_url"], timeout=10).json()
                while time.monotonic() < deadline:
                    h = _history(base)
                    if h["info"]["spool_pending"] == 0 and h["info"]["buffered"] == 0 and h["state"] == "ready":
                        break
                    time.sleep(0.1)
                final = _history(base)
                api = base + "/api/v1/analytics_data"
                unique = httpx.get(api + "/unique_people", params={"task_id": task_id, "resolve_merges": False}).json()
                dwell = httpx.get(api + "/dwell/cameras", params={"task_id": task_id, "resolve_merges": False}).json()
                runs = httpx.get(api + "/task_runs", params={"task_id": task_id}).json()
            db = asyncio.run(_rows(pg_url(name), task_id))
        finally:
            proxy.close()

    assert status["status"] == "COMPLETED" and status["frames_processed"] == N_FRAMES
    assert degraded["status"] == "degraded" and degraded["components"]["history_store"]["detail"]
    info = final["info"]
    assert final["state"] == "ready" and info["spooled"] > 0 and info["replayed"] == info["spooled"]
    assert info["produced"] == info["written"] and info["dropped"] == 0 and info["rejected"] == 0

    # every track of every frame the task published is in the table, exactly once
    (_frames, messages, close_code) = ws[0]
    assert close_code == 1000
    updates = [m for m in messages if m["type"] == "tracking_update"]
    assert len(updates) == N_FRAMES
    published = [
        (cid, cam["frame_index"], t["track_id"], t["global_id"])
        for u in updates
        for cid, cam in u["cameras"].items()
        for t in cam["tracks"]
    ]
    assert published and len(set(published)) == len(published)
    assert sorted(db["keys"]) == sorted(published) and db["total"] == len(published)
    # identity events: the ones the task published, in order, no gap, no repeat
    published_events = [(m["event"], m["global_id"]) for m in messages if m["type"] == "identity_event"]
    assert published_events and [(e, g) for _s, e, g in db["events"]] == published_events
    assert [s for s, _e, _g in db["events"]] == list(range(1, len(published_events) + 1))
    assert db["run"].status == "COMPLETED" and db["run"].frames_processed == N_FRAMES
    assert not list((tmp_path / "data" / "spool").rglob("*.jsonl"))

    # the analytics API answers from it
    assert unique["people"] == len({gid for *_k, gid in published})
    per_cam = {i["camera_id"]: i["person_seconds"] for i in dwell["items"]}
    for cid in CAMERAS:
        n = sum(1 for c, *_rest in published if c == cid)
        assert per_cam[cid] == pytest.approx(n / 7.0, rel=1e-6)  # no frame skipped: each stands for 1/7 s
    assert runs["total"] == 1 and runs["items"][0]["status"] == "COMPLETED"
