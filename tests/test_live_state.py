"""Live state: the bus codec, the in-process store, the Redis store against a real Redis, and the hub
following a task that another hub (another process) publishes — including Redis outages."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.services.notifications import ClientOutbox, FrameMessage, NotificationHub, Outbound
from app.services.processing_task import TaskState, TaskStatus
from app.stores.live_codec import decode_event, encode_event, identity_summary
from app.stores.live_state import (
    LiveClose,
    LiveFrame,
    LiveStateStore,
    LiveStateUnavailableError,
    LiveText,
)
from app.stores.memory_live_state import InProcessLiveState
from app.stores.redis_live_state import OWNER_GONE, RedisLiveState
from app.stores.task_snapshot import snapshot_of, task_from_snapshot
from app.utils.server import free_port
from tests.conftest import require_service

REDIS_URL = "redis://127.0.0.1:6379/0"

TRACKING = {
    "type": "tracking_update",
    "global_frame_index": 7,
    "timestamp_video_s": 1.0,
    "cameras": {
        "c1": {"frame_index": 7, "tracks": [
            {"track_id": 1, "global_id": 4, "bbox_xyxy": [0, 0, 1, 1], "confidence": 0.9, "map_coords": [1.0, 2.0]},
            {"track_id": 2, "global_id": 5, "bbox_xyxy": [0, 0, 1, 1], "confidence": 0.8, "map_coords": None},
        ]},
        "c2": {"frame_index": 7, "tracks": [
            {"track_id": 9, "global_id": 4, "bbox_xyxy": [0, 0, 1, 1], "confidence": 0.7, "map_coords": [2.0, 4.0]},
        ]},
    },
}


def frame(cam: str, i: int, low: bytes | None = None) -> FrameMessage:
    return FrameMessage(cam, f"{cam}-{i}".encode(), time.monotonic(), low)


async def drain(box: ClientOutbox) -> list[Outbound]:
    """What the outbox holds now, in the order a client would be sent it."""
    return [await box.get() for _ in range(box.pending())]


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def task_state(task_id: str) -> TaskState:
    return TaskState(task_id=task_id, environment_id="env", camera_ids=["c1", "c2"])


# -- codec and summaries -----------------------------------------------------------------------------------
def test_bus_records_round_trip_and_bad_records_are_rejected() -> None:
    for ev in (
        LiveFrame("c1", b"\x00jpeg", 1234.5, b"low"),
        LiveFrame("cam-é", b"x" * 1000, 1.0),
        LiveText('{"type":"frame_sync","global_frame_index":3}', "frame_sync"),
        LiveClose(),
        LiveClose("gone"),
    ):
        assert decode_event(encode_event(ev)) == ev
    assert decode_event(encode_event(LiveText('{"a":1,"type":"x"}', "ignored"))).kind == "x"
    raw = encode_event(LiveFrame("c1", b"abc", 1.0))
    for bad in (b"", b"Zjunk", raw[:-1], raw[:5]):
        with pytest.raises(ValueError):
            decode_event(bad)


def test_identity_summary_lists_visible_global_ids_with_cameras_and_mean_position() -> None:
    s = identity_summary(TRACKING)
    assert s["persons_now"] == 2 and s["global_frame_index"] == 7
    assert s["identities"] == [
        {"global_id": 4, "cameras": ["c1", "c2"], "map_xy": [1.5, 3.0]},
        {"global_id": 5, "cameras": ["c1"], "map_xy": None},
    ]


def test_task_snapshot_round_trips_and_rejects_other_json() -> None:
    t = task_state("t1")
    t.set(TaskStatus.PROCESSING, "processing", "x")
    t.stats.frames_processed = 12
    t.stats.fps_per_camera = {"c1": 7.0}
    back = task_from_snapshot(json.loads(json.dumps(snapshot_of(t))))
    assert back.status is TaskStatus.PROCESSING and back.stats.frames_processed == 12
    assert back.created_at == t.created_at and back.stats.fps_per_camera == {"c1": 7.0}
    with pytest.raises(ValueError):
        task_from_snapshot({"task_id": "x"})


# -- the two stores, one contract ----------------------------------------------------------------------------
@pytest.fixture
def redis_prefix() -> Iterator[str]:
    require_service("Redis", "127.0.0.1", 6379)
    prefix = f"spoton-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}:*"))
    if keys:
        r.delete(*keys)
    r.close()


def make_store(kind: str, prefix: str | None, **kw: Any) -> LiveStateStore:
    if kind == "memory":
        return InProcessLiveState(ttl_s=kw.get("ttl_s", 60.0))
    assert prefix is not None
    return RedisLiveState(REDIS_URL, prefix=prefix, **kw)


def run_with(kind: str, request: pytest.FixtureRequest, body: Callable[..., Awaitable[None]], **kw: Any) -> None:
    prefix = request.getfixturevalue("redis_prefix") if kind == "redis" else None

    async def main() -> None:
        if kind == "memory":
            store = make_store(kind, prefix, **kw)
            await store.start()
            try:
                await body(store, store)  # one process: producer and reader share the store
            finally:
                await store.close()
            return
        a, b = make_store(kind, prefix, **kw), make_store(kind, prefix, **kw)
        await a.start()
        await b.start()
        try:
            await body(a, b)  # two processes: a runs the task, b reads
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_status_latest_frame_per_camera_tracks_and_identities_round_trip(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async def body(a: LiveStateStore, b: LiveStateStore) -> None:
        task = task_state("t1")
        a.register_task("t1", lambda: snapshot_of(task))
        assert await a.flush(2.0)
        got = await b.get_task("t1")
        assert got is not None and task_from_snapshot(got).status is TaskStatus.QUEUED
        assert await b.get_task("nope") is None

        a.publish("t1", LiveFrame("c1", b"c1-1", 10.0, b"low"))
        a.publish("t1", LiveFrame("c2", b"c2-1", 10.0))
        a.publish("t1", LiveFrame("c1", b"c1-2", 11.0))
        a.publish("t1", LiveText(json.dumps(TRACKING), "tracking_update", TRACKING))
        task.set(TaskStatus.PROCESSING, "processing")
        a.publish("t1", LiveText('{"type":"status_update","status":"PROCESSING"}', "status_update"))
        assert await a.flush(2.0)

        frames = await b.latest_frames("t1")
        assert {c: f.data for c, f in frames.items()} == {"c1": b"c1-2", "c2": b"c2-1"}
        assert frames["c1"].produced_at == 11.0
        tracks = await b.latest_tracks("t1")
        assert sorted(tracks) == ["c1", "c2"] and tracks["c2"]["tracks"][0]["global_id"] == 4
        assert (await b.identity_summary("t1")) == identity_summary(TRACKING)
        got = await b.get_task("t1")
        assert got is not None and got["status"] == "PROCESSING"  # status messages refresh the snapshot

        task.set(TaskStatus.COMPLETED, "completed")
        a.publish("t1", LiveClose())
        assert await a.flush(2.0)
        got = await b.get_task("t1")
        assert got is not None and got["status"] == "COMPLETED"

    run_with(kind, request, body)


def test_redis_keys_expire_after_the_configured_ttl(redis_prefix: str) -> None:
    async def main() -> None:
        store = RedisLiveState(REDIS_URL, prefix=redis_prefix, ttl_s=30.0, owner_timeout_s=5.0)
        await store.start()
        try:
            task = task_state("t1")
            store.register_task("t1", lambda: snapshot_of(task))
            store.publish("t1", LiveFrame("c1", b"jpeg", 1.0))
            store.publish("t1", LiveText(json.dumps(TRACKING), "tracking_update", TRACKING))
            store.publish("t1", LiveText('{"type":"status_update"}', "status_update"))
            assert await store.flush(2.0)
        finally:
            await store.close()

    asyncio.run(main())
    r = redis.Redis.from_url(REDIS_URL)
    base = f"{redis_prefix}:task:t1"
    for key in (base, f"{base}:frames", f"{base}:tracks", f"{base}:identities", f"{base}:status"):
        assert 25_000 < r.pttl(key) <= 30_000, key
    assert 0 < r.pttl(f"{base}:alive") <= 5_000
    r.close()


def test_in_process_state_expires_after_ttl_but_not_while_the_task_runs() -> None:
    async def main() -> None:
        store = InProcessLiveState(ttl_s=0.2)
        task = task_state("t1")
        store.register_task("t1", lambda: snapshot_of(task))
        store.publish("t1", LiveFrame("c1", b"x", 1.0))
        await asyncio.sleep(0.3)
        assert await store.get_task("t1") is not None  # still running here
        store.publish("t1", LiveClose())
        assert await store.get_task("t1") is not None
        await asyncio.sleep(0.3)
        assert await store.get_task("t1") is None and await store.latest_frames("t1") == {}

    asyncio.run(main())


# -- a hub following a task another hub publishes --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_second_hub_streams_a_task_the_first_runs_with_outbox_semantics_and_close(
    kind: str, request: pytest.FixtureRequest
) -> None:
    async def body(a: LiveStateStore, b: LiveStateStore) -> None:
        hub_a, hub_b = NotificationHub(live=a), NotificationHub(live=b)
        task = task_state("t1")
        hub_a.open_task("t1")
        a.register_task("t1", lambda: snapshot_of(task))
        hub_a.publish_frame("t1", frame("c1", 0))
        hub_a.publish_frame("t1", frame("c2", 0))
        hub_a.publish_json("t1", {"type": "status_update", "status": "PROCESSING"})
        assert await a.flush(2.0)
        assert not await hub_b.follow("unknown")

        assert await hub_b.follow("t1")
        late = hub_b.subscribe("t1")  # a late joiner: the latest frame of every camera and the status
        first = await drain(late)
        assert sorted(m.data for m in first if m.kind == "bytes") == [b"c1-0", b"c2-0"]  # type: ignore[type-var]
        assert any(m.kind == "text" and "PROCESSING" in str(m.data) for m in first)
        slow = hub_b.subscribe("t1")
        await drain(slow)

        got: list[Outbound] = []
        for g in range(1, 6):
            hub_a.publish_frame("t1", frame("c1", g))
            hub_a.publish_frame("t1", frame("c2", g))
            hub_a.publish_json("t1", {"type": "tracking_update", "global_frame_index": g})
            await until(lambda: late.pending() == 3)  # a reading client: both frames and the update
            got += await drain(late)
        # the reading client got every frame, each tracking_update after its frames, in order
        assert [m.data for m in got if m.kind == "bytes"] == [f"{c}-{g}".encode() for g in range(1, 6)
                                                               for c in ("c1", "c2")]
        assert [json.loads(m.data)["global_frame_index"] for m in got if m.kind == "text"] == [1, 2, 3, 4, 5]
        assert all(m.decoded_at is not None and m.decoded_at <= time.monotonic() for m in got if m.kind == "bytes")
        # the client that did not read kept only the newest frame per camera
        assert [m.data for m in await drain(slow) if m.kind == "bytes"] == [b"c1-5", b"c2-5"]

        task.set(TaskStatus.COMPLETED, "completed")
        hub_a.publish_json("t1", {"type": "status_update", "status": "COMPLETED"})
        hub_a.close_task("t1")
        await until(lambda: late.closed)
        tail = await drain(late)
        assert tail[-1].kind == "close" and tail[-1].reason == ""
        assert "COMPLETED" in str(tail[-2].data)
        got_task = await b.get_task("t1")
        assert got_task is not None and got_task["status"] == "COMPLETED"
        after = hub_b.subscribe("t1")  # after the end: last frames, final status, close
        assert (await drain(after))[-1].kind == "close"

    run_with(kind, request, body)


def test_a_constrained_remote_client_makes_the_producer_encode_low_variants(redis_prefix: str) -> None:
    async def main() -> None:
        a = RedisLiveState(REDIS_URL, prefix=redis_prefix, owner_timeout_s=0.6)
        b = RedisLiveState(REDIS_URL, prefix=redis_prefix, owner_timeout_s=0.6)
        await a.start()
        await b.start()
        try:
            hub_a, hub_b = NotificationHub(live=a), NotificationHub(live=b)
            hub_a.open_task("t1")
            a.register_task("t1", lambda: snapshot_of(task_state("t1")))
            assert await a.flush(2.0)
            assert await hub_b.follow("t1")
            box = hub_b.subscribe("t1")  # never reads
            assert not hub_a.wants_low_variant("t1")
            for i in range(40):
                hub_a.publish_frame("t1", frame("c1", i, low=b"low"))
                await asyncio.sleep(0.05)
                if hub_a.wants_low_variant("t1"):
                    break
            assert box.constrained and hub_a.wants_low_variant("t1")
            hub_a.publish_frame("t1", frame("c1", 99, low=b"low"))
            await until(lambda: a.health().info["queued"] == 0)
            await asyncio.sleep(0.1)
            assert [m.data for m in await drain(box)] == [b"low"]  # the low variant crossed the bus
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())


def test_followers_are_closed_when_the_task_process_stops_refreshing_its_heartbeat(redis_prefix: str) -> None:
    async def main() -> None:
        a = RedisLiveState(REDIS_URL, prefix=redis_prefix, owner_timeout_s=0.6)
        b = RedisLiveState(REDIS_URL, prefix=redis_prefix, owner_timeout_s=0.6)
        await a.start()
        await b.start()
        try:
            hub_b = NotificationHub(live=b)
            a.register_task("t1", lambda: snapshot_of(task_state("t1")))
            assert await a.flush(2.0)
            assert await hub_b.follow("t1")
            box = hub_b.subscribe("t1")
            await asyncio.sleep(1.0)
            assert not box.closed  # the owner's heartbeat keeps it open
            await a.close()  # the owner goes away without closing the task
            await until(lambda: box.closed, timeout=5.0)
            msg = (await drain(box))[-1]
            assert msg.kind == "close" and msg.reason == OWNER_GONE
        finally:
            await b.close()

    asyncio.run(main())


# -- Redis unreachable, then back ---------------------------------------------------------------------------------
def test_unreachable_redis_degrades_without_blocking_and_local_clients_keep_streaming() -> None:
    async def main() -> None:
        store = RedisLiveState(f"redis://127.0.0.1:{free_port()}/0", queue_size=4, timeout_s=0.5)
        await store.start()
        try:
            h = store.health()
            assert not h.connected and "unreachable" in h.detail
            hub = NotificationHub(live=store)
            hub.open_task("t1")
            store.register_task("t1", lambda: snapshot_of(task_state("t1")))
            box = hub.subscribe("t1")
            t0 = time.monotonic()
            for i in range(50):
                hub.publish_frame("t1", frame("c1", i))
                hub.publish_json("t1", {"type": "tracking_update", "global_frame_index": i})
            assert time.monotonic() - t0 < 0.5  # publishing never waits on Redis
            got = await drain(box)
            assert [m.data for m in got if m.kind == "bytes"] == [b"c1-49"]
            assert len([m for m in got if m.kind == "text"]) == 32  # the outbox's own bound
            assert store.health().info["queued"] <= 4 + 2  # bounded: frames/messages + registration/flush
            assert store.health().info["dropped"] >= 96
            assert not await store.flush(0.3)
            with pytest.raises(LiveStateUnavailableError):
                await store.get_task("t1")
            with pytest.raises(LiveStateUnavailableError):
                await NotificationHub(live=store).follow("t2")
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts (and restarts) a throw-away redis-server on a free port, so a test can stop it."""
    exe = shutil.which("redis-server")
    if exe is None:
        require_service("redis-server executable", "127.0.0.1", 1)  # skips, or fails in CI
        raise AssertionError("unreachable")
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        p = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL,
        )
        procs.append(p)
        r = redis.Redis(port=port)
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        r.close()
        return p

    start.port = port  # type: ignore[attr-defined]
    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_follower_and_producer_recover_when_redis_comes_back(
    private_redis: Callable[[], subprocess.Popen[bytes]],
) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}/0"  # type: ignore[attr-defined]
    server = private_redis()

    async def main() -> None:
        nonlocal server
        a = RedisLiveState(url, owner_timeout_s=30.0, timeout_s=0.5)
        b = RedisLiveState(url, owner_timeout_s=30.0, timeout_s=0.5)
        await a.start()
        await b.start()
        try:
            hub_a, hub_b = NotificationHub(live=a), NotificationHub(live=b)
            hub_a.open_task("t1")
            a.register_task("t1", lambda: snapshot_of(task_state("t1")))
            assert await a.flush(2.0)
            assert await hub_b.follow("t1")
            remote = hub_b.subscribe("t1")
            local = hub_a.subscribe("t1")
            hub_a.publish_frame("t1", frame("c1", 0))
            await until(lambda: remote.pending() > 0)
            await drain(remote)

            server.kill()
            server.wait()
            for i in range(1, 20):
                hub_a.publish_frame("t1", frame("c1", i))
                await asyncio.sleep(0.05)
            await until(lambda: not a.health().connected)
            assert [m.data for m in await drain(local)] == [b"c1-19"]  # local clients never noticed
            await drain(remote)

            server = private_redis()  # Redis is back (empty: it keeps nothing on disk)

            async def publish_forever() -> None:
                for i in itertools.count(100):
                    hub_a.publish_frame("t1", frame("c1", i))
                    await asyncio.sleep(0.05)

            publisher = asyncio.create_task(publish_forever())
            try:
                await until(lambda: remote.pending() > 0, timeout=15.0)
            finally:
                publisher.cancel()
            [msg] = await drain(remote)
            assert int(bytes(msg.data).split(b"-")[1]) >= 100  # type: ignore[arg-type]
            await until(lambda: a.health().connected and b.health().connected, timeout=8.0)
            await asyncio.sleep(1.2)  # one heartbeat
            got = await b.get_task("t1")  # the heartbeat rewrote the snapshot Redis lost
            assert got is not None and got["task_id"] == "t1"
            hub_a.close_task("t1")
            await until(lambda: remote.closed)
            assert a.health().info["dropped"] > 0 and a.health().info["write_errors"] > 0
        finally:
            await a.close()
            await b.close()

    asyncio.run(main())
