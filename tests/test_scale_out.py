"""Scale-out on NATS JetStream with real processes: 2 API nodes (``serve --role api``) and 2 workers
(``spoton worker``, 1 slot each) on the machine's nats-server, Redis and PostgreSQL.

Placement and queueing, streaming through another node, stop from anywhere, a worker killed (SIGKILL) or
frozen (SIGSTOP/SIGCONT) or terminated (SIGTERM) mid-task, an API node killed. Figures the note quotes are
printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.utils.server import free_port
from tests.cluster_support import NATS_URL, Cluster, Stream, cluster, receive, start_task, status, wait_until, ws_url
from tests.history_support import ADMIN_DSN, fresh_pg_database
from tests.test_e2e import make_clip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
LEASE_S = 3.0
LONG = 300  # frames of the derived 7 fps cameras: 43 s played as if live
MEDIUM = 110


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_pg_database() as name:
        yield name


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("clips")
    out = []
    for name, n in (("clip-long", LONG), ("clip", MEDIUM)):
        d = root / name
        d.mkdir()
        make_clip(d, n)
        env = json.loads((d / "environment.json").read_text())
        env["id"] = name
        (d / "environment.json").write_text(json.dumps(env))
        out.append(d)
    return out


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory, clips: list[Path], database: str) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    # every frame processed (no pacing): a resumed run must repeat the lost run's frames after the checkpoint
    # exactly, tracks and ids alike, which is what the resume tests compare
    settings = {"task_lease_s": str(LEASE_S), "checkpoint_interval_s": "1", "playback_speed": "max"}
    with cluster(root, clips, database, **settings) as c:
        c.add_worker("w1", health_port=free_port())
        c.add_worker("w2")
        c.add_api()
        c.add_api()
        c.wait_workers_ready(["w1", "w2"])
        yield c


def _running(api: str, task_id: str, min_frames: int = 1) -> dict[str, Any] | None:
    st = status(api, task_id)
    return st if st["status"] == "PROCESSING" and st["frames_processed"] >= min_frames else None


def _respawn(c: Cluster, worker_id: str) -> None:
    c.workers[worker_id].stop()
    c.add_worker(worker_id)
    c.wait_workers_ready([worker_id])


async def _history(database: str, task_id: str) -> tuple[list[asyncpg.Record], int]:
    conn = await asyncpg.connect(ADMIN_DSN.rsplit("/", 1)[0] + f"/{database}")
    try:
        rows = await conn.fetch(
            "SELECT camera_id, frame_index, track_id, global_id FROM tracking_events WHERE task_id = $1", task_id
        )
        epoch = await conn.fetchval("SELECT epoch FROM task_runs WHERE task_id = $1", task_id)
        return rows, int(epoch)
    finally:
        await conn.close()


def _tracks(update: dict[str, Any]) -> set[tuple[str, int, int, int]]:
    return {
        (cam, v["frame_index"], t["track_id"], t["global_id"])
        for cam, v in update["cameras"].items()
        for t in v["tracks"]
    }


def test_three_tasks_on_two_workers_one_waits_stream_and_stop_from_another_node(four: Cluster) -> None:
    a, b = four.apis[0].base, four.apis[1].base
    ids = [start_task(a, "clip-long") for _ in range(3)]

    def placed() -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        sts = [status(b, t) for t in ids]
        run = [s for s in sts if s["status"] == "PROCESSING"]
        queued = [s for s in sts if s["status"] == "QUEUED"]
        return (run, queued[0]) if len(run) == 2 and len(queued) == 1 else None

    running, waiting = wait_until(placed, 120, "two tasks running, one queued", *four.workers.values())
    assert {s["worker_id"] for s in running} == {"w1", "w2"}
    assert waiting["queue_position"] == 1 and waiting["worker_id"] is None

    workers = {w["worker_id"]: w for w in httpx.get(b + "/api/v1/workers").json()}
    assert set(workers) == {"w1", "w2"}
    for w in workers.values():
        assert w["slots"] == 1 and w["load"] == 1.0 and len(w["running_tasks"]) == 1 and w["alive"]
        assert w["models"]["detector"]["state"] == "ready" and w["device"] == "cpu"
        assert w["heartbeat_age_s"] < 3 * 2.0
    listed = {t["task_id"]: t for t in httpx.get(b + "/api/v1/processing-tasks").json()}
    assert set(ids) <= set(listed)
    probe = httpx.get(four.workers["w1"].base + "/health")  # a worker's own probe (--health-port)
    assert probe.status_code == 200 and probe.json()["role"] == "worker" and probe.json()["nats_connected"]
    assert probe.json()["components"]["detector"]["state"] == "ready"
    assert len(probe.json()["worker"]["running"]) == 1
    health = httpx.get(b + "/health").json()
    assert health["role"] == "api" and "detector" not in health["components"]
    assert health["components"]["task_queue"]["state"] == "ready"

    # node B streams a task that runs on a worker, and stops it
    first = running[0]
    stream = Stream()

    async def watch_and_stop() -> None:
        client = asyncio.create_task(receive(ws_url(b, first["task_id"]), stream))
        await asyncio.to_thread(wait_until, lambda: len(stream.frames) >= 8, 60, "frames on node B")
        r = httpx.post(f"{b}/api/v1/processing-tasks/{first['task_id']}/stop")
        assert r.status_code == 200, r.text
        await asyncio.wait_for(client, 60)

    asyncio.run(watch_and_stop())
    assert stream.close_code == 1000 and stream.statuses[-1]["status"] == "STOPPED"
    assert {cam for cam, _ in stream.frames} == {"c1", "c2", "c3", "c4"}
    assert status(a, first["task_id"])["status"] == "STOPPED"

    # the freed slot takes the queued task
    taken = wait_until(lambda: _running(a, waiting["task_id"]), 60, "queued task placed")
    assert taken["worker_id"] == first["worker_id"]

    # a task that waits in the queue is stopped from either node, and never runs
    fourth = start_task(b, "clip-long")
    assert status(a, fourth)["status"] == "QUEUED"
    r = httpx.post(f"{a}/api/v1/processing-tasks/{fourth}/stop")
    assert r.status_code == 200 and r.json()["status"] == "STOPPED"
    for t in ids[1:]:
        assert httpx.post(f"{b}/api/v1/processing-tasks/{t}/stop").status_code == 200
    for t in ids[1:]:
        wait_until(lambda t=t: status(a, t)["status"] == "STOPPED", 60, f"{t} stopped")
    time.sleep(1.5)
    never = status(b, fourth)
    assert never["status"] == "STOPPED" and never["worker_id"] is None and never["frames_processed"] == 0
    assert httpx.post(f"{a}/api/v1/processing-tasks/nope/stop").status_code == 404


async def _between_checkpoints(four: Cluster, task_id: str, stream: Stream) -> None:
    """Wait until a checkpoint has just been written (within half the 1 s interval) and the client has received a
    frame after it: a worker killed now has done work the resumed run must repeat alike, and the next checkpoint is
    not due yet (killed right at a checkpoint, nothing would be left to compare). The checkpoint's frame is read
    from the cluster's KV bucket, over one connection."""
    import nats
    from nats.js.errors import KeyNotFoundError

    from app.services.cluster.names import ClusterNames

    nc = await nats.connect(NATS_URL)
    kv = await nc.jetstream().key_value(ClusterNames(four.env["SPOTON_NATS_PREFIX"]).checkpoints_bucket)

    async def checkpointed_frame() -> int | None:
        try:
            entry = await kv.get(task_id)
        except KeyNotFoundError:
            return None
        frame = json.loads(entry.value or b"{}").get("frame")
        return None if frame is None else int(frame)

    try:
        last = await checkpointed_frame()
        changed_at: float | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            frame = await checkpointed_frame()
            if frame != last:
                last, changed_at = frame, time.monotonic()
            seen = max((u["global_frame_index"] for u in stream.updates if u.get("epoch") == 1), default=-1)
            if last is not None and changed_at is not None and seen > last:
                if time.monotonic() - changed_at < 0.5:
                    return
                changed_at = None  # too late in this interval: wait for the next checkpoint
            await asyncio.sleep(0.01)
    finally:
        await nc.close()
    raise AssertionError(f"no moment between two checkpoints within 60 s (last checkpoint {last})")


def _kill_and_resume(four: Cluster, database: str, sig: int) -> tuple[Stream, dict[str, Any], float, str]:
    """Start a task, SIGKILL/SIGTERM its worker mid-task, follow it to the end on node B."""
    a, b = four.apis[0].base, four.apis[1].base
    tid = start_task(a, "clip")
    stream = Stream()
    figures: dict[str, Any] = {}

    async def run() -> None:
        client = asyncio.create_task(receive(ws_url(b, tid), stream))
        st = await asyncio.to_thread(wait_until, lambda: _running(a, tid, 25), 90, "task processing")
        victim = str(st["worker_id"])  # a task stays on its worker while that one is alive
        if sig == signal.SIGKILL:
            await _between_checkpoints(four, tid, stream)
        four.workers[victim].signal(sig)
        if sig == signal.SIGKILL:  # what the killed worker last reported (no request between the wait and the kill)
            st = status(a, tid)
        figures["victim"], figures["frames_at_signal"] = victim, st["frames_processed"]
        t0 = time.monotonic()

        def moved() -> dict[str, Any] | None:
            s = status(b, tid)
            return s if s["worker_id"] not in (None, victim) and s["resumed_from_frame"] is not None else None

        s = await asyncio.to_thread(wait_until, moved, 60, "task resumed on the other worker")
        figures["requeue_s"] = time.monotonic() - t0
        figures["resumed_on"], figures["resumed_from_frame"] = s["worker_id"], s["resumed_from_frame"]
        await asyncio.wait_for(client, 120)

    asyncio.run(run())
    return stream, figures, figures["requeue_s"], tid


def _check_resumed_stream(stream: Stream, figures: dict[str, Any], database: str, tid: str) -> None:
    assert stream.close_code == 1000, stream.statuses[-3:]
    assert stream.statuses[-1]["status"] == "COMPLETED"
    assert any(s["status"] == "RESUMING" for s in stream.statuses)
    resume = figures["resumed_from_frame"]
    first_run = {u["global_frame_index"]: u for u in stream.updates if u["epoch"] == 1}
    second_run = [u for u in stream.updates if u["epoch"] == 2]
    assert first_run and second_run and second_run[0]["global_frame_index"] > resume
    indexes = [u["global_frame_index"] for u in second_run]
    assert indexes == sorted(set(indexes)) and indexes[-1] >= MEDIUM - 5  # the last ones may be skipped (late)
    # no epoch-1 message after the first epoch-2 one
    at = next(i for i, (k, v) in enumerate(stream.items) if k == "json" and v.get("epoch") == 2)
    assert all(v.get("epoch") != 1 for k, v in stream.items[at:] if k == "json")
    # ids continue: a frame both runs reached through the same frames since the checkpoint (pacing may skip
    # different ones) has the same tracks with the same global ids
    done1 = sorted(g for g in first_run if g > resume)
    done2 = [u["global_frame_index"] for u in second_run]
    comparable = [
        g for g in done2 if g in first_run and [x for x in done1 if x <= g] == [x for x in done2 if x <= g]
    ]
    for g in comparable:
        assert _tracks(next(u for u in second_run if u["global_frame_index"] == g)) == _tracks(first_run[g])
    figures["identical_frames"] = len(comparable)
    # history: the first run up to the checkpoint, then the second run — nothing twice, nothing missing
    rows, epoch = asyncio.run(_history(database, tid))
    assert epoch == 2
    keys = [(r["camera_id"], r["frame_index"], r["track_id"]) for r in rows]
    assert len(keys) == len(set(keys))
    lineage = {t for g, u in first_run.items() if g <= resume for t in _tracks(u)}
    lineage |= {t for u in second_run for t in _tracks(u)}
    assert {(r["camera_id"], r["frame_index"], r["track_id"], r["global_id"]) for r in rows} == lineage


def test_sigkill_of_a_worker_resumes_its_task_on_the_other(four: Cluster, database: str) -> None:
    stream, figures, requeue_s, tid = _kill_and_resume(four, database, signal.SIGKILL)
    print(f"\nSIGKILL: re-queued and resumed on {figures['resumed_on']} after {requeue_s:.2f} s "
          f"(lease {LEASE_S} s); killed at frame ~{figures['frames_at_signal']}, resumed after frame "
          f"{figures['resumed_from_frame']}")
    assert requeue_s <= LEASE_S + 4.0
    _check_resumed_stream(stream, figures, database, tid)
    assert figures["identical_frames"] > 0  # the killed run got past its last checkpoint: those were compared
    workers = {w["worker_id"]: w for w in httpx.get(four.apis[1].base + "/api/v1/workers").json()}
    assert workers[figures["resumed_on"]]["counters"]["resumed"] >= 1
    print(f"frames both runs processed alike after the checkpoint: {figures['identical_frames']}")
    _respawn(four, figures["victim"])


def test_sigterm_hands_the_task_back_at_once(four: Cluster, database: str) -> None:
    stream, figures, requeue_s, tid = _kill_and_resume(four, database, signal.SIGTERM)
    print(f"\nSIGTERM: handed back and resumed on {figures['resumed_on']} after {requeue_s:.2f} s")
    victim = four.workers[figures["victim"]]
    assert victim.popen is not None and victim.popen.wait(30) == 0
    assert requeue_s < LEASE_S  # handed back, not found by the lease running out
    assert figures["resumed_from_frame"] >= figures["frames_at_signal"] - 1
    _check_resumed_stream(stream, figures, database, tid)
    _respawn(four, figures["victim"])


def test_a_frozen_worker_is_fenced_out(four: Cluster, database: str) -> None:
    a, b = four.apis[0].base, four.apis[1].base
    tid = start_task(a, "clip-long")
    stream = Stream()
    figures: dict[str, Any] = {}

    async def run() -> None:
        client = asyncio.create_task(receive(ws_url(b, tid), stream))
        st = await asyncio.to_thread(wait_until, lambda: _running(a, tid, 20), 90, "task processing")
        victim = four.workers[str(st["worker_id"])]
        figures["victim"] = victim.name
        victim.signal(signal.SIGSTOP)

        def moved() -> dict[str, Any] | None:
            s = status(b, tid)
            return s if s["worker_id"] != victim.name and s["status"] == "PROCESSING" else None

        await asyncio.to_thread(wait_until, moved, 60, "task taken over")
        victim.signal(signal.SIGCONT)
        await asyncio.sleep(4.0)  # the thawed worker had frames in flight: none may reach the client
        httpx.post(f"{b}/api/v1/processing-tasks/{tid}/stop")
        await asyncio.wait_for(client, 60)

    asyncio.run(run())
    victim = four.workers[figures["victim"]]
    assert victim.alive()
    at = next(i for i, (k, v) in enumerate(stream.items) if k == "json" and v.get("epoch") == 2)
    stale = [v for k, v in stream.items[at:] if k == "json" and v.get("epoch") == 1]
    assert not stale
    indexes = [v["global_frame_index"] for k, v in stream.items[at:] if k == "json" and v["type"] == "tracking_update"]
    assert indexes == sorted(set(indexes))
    assert stream.statuses[-1]["status"] == "STOPPED" and stream.close_code == 1000
    assert "lease lost" in victim.tail(200_000)
    rows, epoch = asyncio.run(_history(database, tid))
    keys = [(r["camera_id"], r["frame_index"], r["track_id"]) for r in rows]
    assert epoch == 2 and len(keys) == len(set(keys))
    # the thawed worker is back in service, empty
    wait_until(
        lambda: any(
            w["worker_id"] == victim.name and w["alive"] and not w["running_tasks"] and w["accepting"]
            for w in httpx.get(a + "/api/v1/workers").json()
        ),
        30,
        "thawed worker idle",
    )


def test_killing_an_api_node_affects_no_task(four: Cluster) -> None:
    a, b = four.apis[0], four.apis[1]
    tid = start_task(a.base, "clip")
    stream = Stream()

    async def run() -> None:
        client = asyncio.create_task(receive(ws_url(b.base, tid), stream))
        await asyncio.to_thread(wait_until, lambda: _running(b.base, tid, 5), 90, "task processing")
        a.signal(signal.SIGKILL)
        await asyncio.wait_for(client, 120)

    asyncio.run(run())
    assert stream.close_code == 1000 and stream.statuses[-1]["status"] == "COMPLETED"
    final = status(b.base, tid)
    assert final["status"] == "COMPLETED" and final["resumed_from_frame"] is None
    assert stream.updates and stream.updates[-1]["global_frame_index"] >= MEDIUM - 5


def test_a_task_fails_with_the_reason_after_max_deliver(
    tmp_path: Path, clips: list[Path], database: str
) -> None:
    with cluster(tmp_path, clips, database, task_lease_s="2", task_max_deliver="1") as c:
        c.add_worker("solo")
        api = c.add_api().base
        c.wait_workers_ready(["solo"])
        tid = start_task(api, "clip-long")
        stream = Stream()

        async def run() -> None:
            client = asyncio.create_task(receive(ws_url(api, tid), stream))
            await asyncio.to_thread(wait_until, lambda: _running(api, tid, 3), 90, "task processing")
            c.workers["solo"].signal(signal.SIGKILL)
            await asyncio.wait_for(client, 60)

        asyncio.run(run())
        final = status(api, tid)
        assert final["status"] == "FAILED" and "gave up after 1 deliveries" in final["details"]
        assert stream.close_code == 1000 and stream.statuses[-1]["status"] == "FAILED"


def test_serve_role_all_is_an_api_node_and_a_worker(tmp_path: Path, clips: list[Path], database: str) -> None:
    """``spoton serve`` with NATS and no role: API and worker in one process, tasks through the queue."""
    from app.core.config import Settings
    from tests.cluster_support import NATS_URL, REDIS_URL, _cleanup
    from tests.live_server import live_server

    tag = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        nats_url=NATS_URL,
        nats_prefix=tag,
        redis_url=REDIS_URL,
        redis_key_prefix=f"spoton-test-{tag}",
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        environments_dir=tmp_path / "none",
        extra_environments=[clips[1]],
        data_dir=tmp_path / "var",
        playback_speed=0.0,
        worker_id="all-in-one",
    )
    try:
        with live_server(settings) as base:
            assert httpx.get(base + "/health").json()["role"] == "all"
            wait_until(lambda: any(w["accepting"] for w in httpx.get(base + "/api/v1/workers").json()), 120,
                       "the in-process worker")  # fmt: skip
            tid = start_task(base, "clip")
            stream = asyncio.run(receive(ws_url(base, tid), Stream()))
            final = status(base, tid)
            assert final["status"] == "COMPLETED" and final["worker_id"] == "all-in-one"
            assert final["frames_processed"] == MEDIUM and stream.close_code == 1000
            assert stream.updates[-1]["global_frame_index"] == MEDIUM - 1
    finally:
        asyncio.run(_cleanup(tag, f"spoton-test-{tag}"))
