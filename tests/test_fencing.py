"""Fencing a worker that lost its task (scale-out), at each place it could still write: the live state in
Redis, the history database (PostgreSQL and SQLite), and the JetStream lease itself."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from app.core.config import Settings
from app.services.cluster.jetstream import ClusterSettings, connect, drop_cluster, ensure_cluster
from app.services.cluster.lease import TaskLease
from app.services.cluster.records import Placement, TaskRecord
from app.services.cluster.roles import effective_role
from app.services.processing_task import TaskState
from app.stores.history.records import TaskRunRecord, TrackingEventRecord
from app.stores.history.repository import StaleEpochError, build_history_repository
from app.stores.history.tables import task_runs, tracking_events
from app.stores.live_state import LiveEvent, LiveFrame, LiveText
from app.stores.redis_live_state import RedisLiveState
from app.stores.task_snapshot import snapshot_of
from tests.conftest import require_service
from tests.history_support import fresh_pg_database, pg_url, sqlite_url

REDIS_URL = "redis://127.0.0.1:6379/0"
NATS_URL = "nats://127.0.0.1:4222"
pytestmark = pytest.mark.timeout(120)


def tracking(video_ts: float, epoch: int, track: int = 1) -> TrackingEventRecord:
    i = int(video_ts * 10)
    return TrackingEventRecord(
        1000.0 + video_ts, "t1", "env", "c1", i, track, 7, 0, 0, 1, 1, 0.9, None, None, video_ts, 0.1, epoch=epoch
    )


def run(epoch: int, status: str = "PROCESSING", updated: float = 1.0) -> TaskRunRecord:
    return TaskRunRecord("t1", "env", ("c1",), status, 0.0, 1000.0, None, updated, 10, 0, epoch=epoch)


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "h.db")
        return
    with fresh_pg_database() as name:
        yield pg_url(name)


def test_history_refuses_a_superseded_run_and_forgets_what_it_wrote_after_the_checkpoint(history_url: str) -> None:
    async def go() -> tuple[list[tuple[float, int]], int, int, str]:
        repo = build_history_repository(Settings(database_url=history_url))
        await repo.prepare()
        # run 1 wrote 0.0 … 0.9 s; its last checkpoint was after 0.5 s
        await repo.write([run(1), *[tracking(t / 10, 1) for t in range(10)]])
        await repo.fence_task(run(2), after_video_ts_s=0.5)  # run 2 takes over
        await repo.write([tracking(0.7, 1, track=3), run(1, "COMPLETED", updated=9.0)])  # run 1, thawed: refused
        await repo.write([tracking(0.6, 2), tracking(0.7, 2)])  # run 2 carries on
        with pytest.raises(StaleEpochError):
            await repo.fence_task(run(1), after_video_ts_s=0.2)
        async with repo.engine.connect() as conn:
            rows = (await conn.execute(select(tracking_events.c.video_ts_s, tracking_events.c.track_id))).all()
            stored = (await conn.execute(select(task_runs))).one()
        fenced = repo.fenced
        await repo.dispose()
        return sorted((round(r[0], 2), r[1]) for r in rows), fenced, stored.epoch, stored.status

    rows, fenced, epoch, status = asyncio.run(go())
    assert rows == [(t / 10, 1) for t in range(8)]  # 0.0-0.5 from run 1, 0.6-0.7 from run 2, nothing twice
    assert fenced == 2 and epoch == 2 and status == "PROCESSING"


def test_redis_live_state_drops_everything_a_superseded_worker_publishes() -> None:
    require_service("Redis", "127.0.0.1", 6379)
    prefix = f"spoton-test-{uuid.uuid4().hex[:10]}"

    async def go() -> tuple[list[str], dict[str, int], dict[str, int]]:
        old, new, follower = (RedisLiveState(REDIS_URL, prefix=prefix, owner_lost="resume") for _ in range(3))
        for s in (old, new, follower):
            await s.start()
        task = TaskState("t1", "env", ["c1"])
        seen: list[str] = []

        def sink(ev: LiveEvent) -> None:
            if isinstance(ev, LiveFrame):
                seen.append(ev.data.decode())
            elif isinstance(ev, LiveText):
                seen.append(json.loads(ev.text)["who"])

        try:
            old.register_task("t1", lambda: snapshot_of(task), epoch=1)
            assert await old.flush(2)
            assert await follower.follow("t1", sink) is not None
            old.publish("t1", LiveFrame("c1", b"old-1", time.time()))
            assert await old.flush(2)
            new.register_task("t1", lambda: snapshot_of(task), epoch=2)  # the takeover
            new.publish("t1", LiveFrame("c1", b"new-1", time.time()))
            assert await new.flush(2)
            old.publish("t1", LiveFrame("c1", b"old-2", time.time()))  # thawed: queued before it froze
            message = {"type": "status_update", "who": "old"}
            old.publish("t1", LiveText(json.dumps(message), "status_update", message))
            assert await old.flush(2)
            new.publish("t1", LiveFrame("c1", b"new-2", time.time()))
            assert await new.flush(2)
            await asyncio.sleep(0.3)
            return seen, dict(old.counters), dict(new.counters)
        finally:
            for s in (old, new, follower):
                await s.close()

    seen, old_counters, new_counters = asyncio.run(go())
    assert seen == ["old-1", "new-1", "new-2"]
    assert old_counters["fenced"] == 2 and new_counters["fenced"] == 0


@pytest.fixture
def jetstream() -> Iterator[ClusterSettings]:
    require_service("NATS", "127.0.0.1", 4222)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    cs = ClusterSettings.from_settings(
        Settings(nats_url=NATS_URL, redis_url=REDIS_URL, nats_prefix=prefix, task_lease_s=1.0, task_max_deliver=3)
    )
    yield cs

    asyncio.run(drop_cluster(NATS_URL, cs.names))


def test_a_renewed_lease_keeps_the_task_and_a_takeover_ends_it(jetstream: ClusterSettings) -> None:
    cs = jetstream

    async def go() -> tuple[bool, int, bool, str, bool]:
        nc = await connect(cs.url, "test")
        h = await ensure_cluster(nc, cs)
        record = TaskRecord("t1", "env", ["c1"], time.time(), placement=Placement.RUNNING, epoch=1)
        await h.tasks.put("t1", record.to_json())
        await h.js.publish(cs.names.start_subject, b'{"task_id": "t1"}')
        sub = await h.js.pull_subscribe_bind(cs.names.consumer, stream=cs.names.stream)
        (msg,) = await sub.fetch(1, timeout=2)
        lease = TaskLease(cs.url, msg.reply, cs.lease_s, cs.names.tasks_bucket, "t1", 1, lambda: None)
        lease.start()
        try:
            await asyncio.sleep(3 * cs.lease_s)  # three lease periods: renewed all along
            try:
                await sub.fetch(1, timeout=1)
                redelivered = True
            except Exception:
                redelivered = False
            held_while_renewed = lease.held()
            await h.tasks.put("t1", dataclasses.replace(record, epoch=2, worker_id="other").to_json())
            await asyncio.sleep(cs.lease_s)
            held_after_takeover = lease.held()
        finally:
            lease.close()
        renewals = lease.renewals
        await nc.close()
        return held_while_renewed, renewals, redelivered, lease.lost_reason, held_after_takeover

    held, renewals, redelivered, reason, held_after = asyncio.run(go())
    assert held and renewals >= 6 and not redelivered
    assert not held_after and "taken over by other" in reason


def test_a_lease_not_renewed_in_time_is_lost_for_good(jetstream: ClusterSettings) -> None:
    lease = TaskLease(NATS_URL, "_INBOX.none", 1.0, jetstream.names.tasks_bucket, "t1", 1, lambda: None)
    assert lease.held()  # just delivered
    time.sleep(0.8)  # a stall (the thread was never started): past the lease minus its margin
    assert not lease.held() and "no confirmed lease renewal" in lease.lost_reason
    lease._renewed_at = time.monotonic()  # a late renewal cannot bring it back
    assert not lease.held()


def test_roles_need_nats_and_the_cluster_needs_redis(tmp_path: Path) -> None:
    assert effective_role(Settings()) == "single"
    assert effective_role(Settings(nats_url=NATS_URL)) == "all"
    assert effective_role(Settings(nats_url=NATS_URL, role="api")) == "api"
    with pytest.raises(ValueError, match="needs SPOTON_NATS_URL"):
        effective_role(Settings(role="api"))
    with pytest.raises(ValueError, match="needs SPOTON_REDIS_URL"):
        ClusterSettings.from_settings(Settings(nats_url=NATS_URL))
    with pytest.raises(ValueError):
        Settings(nats_prefix="bad prefix")


def test_worker_and_api_role_commands_say_what_is_missing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.cli import main

    monkeypatch.delenv("SPOTON_NATS_URL", raising=False)
    assert main(["worker"]) == 2
    assert "set SPOTON_NATS_URL" in capsys.readouterr().err
    assert main(["serve", "--role", "api"]) == 2
    assert "set SPOTON_NATS_URL" in capsys.readouterr().err
    monkeypatch.setenv("SPOTON_NATS_URL", NATS_URL)
    assert main(["worker", "--slots", "0"]) == 2
    assert "--slots must be at least 1" in capsys.readouterr().err


def test_a_worker_with_a_wrong_nats_url_says_so_and_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from app.cli import main
    from app.utils.server import free_port

    for key, value in {
        "SPOTON_NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nothing listens there
        "SPOTON_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "SPOTON_HISTORY_ENABLED": "false",
        "SPOTON_DATA_DIR": str(tmp_path),
        "SPOTON_ENVIRONMENTS_DIR": str(tmp_path / "none"),
    }.items():
        monkeypatch.setenv(key, value)
    t0 = time.monotonic()
    assert main(["worker", "--id", "lost"]) == 1
    assert time.monotonic() - t0 < 30
    assert "unreachable" in caplog.text and "nats-server" in caplog.text
