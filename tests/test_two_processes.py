"""Two real server processes sharing one Redis: a task started on A streams over B's WebSocket.

Also: B's clients are closed (1011) when A dies mid-task, and a server whose Redis is unreachable still runs
tasks for its own clients while ``/health`` says ``degraded``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import websockets

from app.core.config import Settings
from app.utils.server import free_port
from app.utils.wire import unpack_frame
from tests.conftest import require_service
from tests.live_server import live_server
from tests.test_e2e import make_clip

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
REDIS_URL = "redis://127.0.0.1:6379/0"
N_FRAMES = 14  # 2 s of the 7 fps derived cameras
LONG_FRAMES = 60
CAMS = {"c1", "c2", "c3", "c4"}


@contextmanager
def server_process(env_dirs: list[Path], extra_env: dict[str, str], log: Path) -> Iterator[tuple[str, Any]]:
    """``python -m app.cli serve`` on a free port, healthy; stopped (or found killed) at the end."""
    port = free_port()
    env = {**os.environ, **extra_env}
    args = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    for d in env_dirs:
        args += ["--environment", str(d)]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become healthy:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any, str, Any]]:
    require_service("Redis", "127.0.0.1", 6379)
    root = tmp_path_factory.mktemp("two")
    (root / "clip").mkdir()
    (root / "long").mkdir()
    clip = make_clip(root / "clip", N_FRAMES)
    long_clip = make_clip(root / "long", LONG_FRAMES)
    env_json = json.loads((long_clip / "environment.json").read_text())
    env_json["id"] = "clip-long"
    (long_clip / "environment.json").write_text(json.dumps(env_json))
    prefix = f"spoton-test-{uuid.uuid4().hex[:12]}"
    extra = {
        "SPOTON_REDIS_URL": REDIS_URL,
        "SPOTON_REDIS_KEY_PREFIX": prefix,
        "SPOTON_PLAYBACK_SPEED": "max",
        "SPOTON_ENVIRONMENTS_DIR": str(root / "none"),
        "SPOTON_DATA_DIR": str(root / "var"),
        "SPOTON_LIVE_OWNER_TIMEOUT_S": "2",
        "SPOTON_LOG_LEVEL": "WARNING",
    }
    try:
        with (
            server_process([clip, long_clip], extra, root / "a.log") as (a, proc_a),
            server_process([clip, long_clip], extra, root / "b.log") as (b, proc_b),
        ):
            yield a, proc_a, b, proc_b
    finally:
        r = redis.Redis.from_url(REDIS_URL)
        keys = list(r.scan_iter(match=f"{prefix}:*"))
        if keys:
            r.delete(*keys)
        r.close()


async def receive_all(url: str, first_frame: asyncio.Event | None = None) -> tuple[list[str], list[str], int | None]:
    """Camera ids of frames in arrival order, JSON texts, close code."""
    cams: list[str] = []
    texts: list[str] = []
    async with websockets.connect(url, compression=None, max_size=2**24) as ws:
        try:
            async for m in ws:
                if isinstance(m, bytes):
                    cams.append(unpack_frame(m)[0].camera_id)
                    if first_frame is not None:
                        first_frame.set()
                else:
                    texts.append(m)
        except websockets.ConnectionClosed:
            pass
    return cams, texts, ws.close_code


def test_second_process_streams_and_reports_a_task_running_in_the_first(
    two_servers: tuple[str, Any, str, Any],
) -> None:
    a, _, b, _ = two_servers
    r = httpx.post(a + "/api/v1/processing-tasks/start", json={"environment_id": "clip"})
    assert r.status_code == 202, r.text
    tid = r.json()["task_id"]
    ws_a = r.json()["websocket_url"]
    ws_b = b.replace("http://", "ws://") + f"/ws/tracking/{tid}"
    assert httpx.get(f"{b}/api/v1/processing-tasks/{tid}/status").status_code == 200  # B knows it at once

    async def both() -> tuple[tuple[list[str], list[str], int | None], ...]:
        return tuple(await asyncio.gather(receive_all(ws_b), receive_all(ws_a)))

    (cams_b, texts_b, close_b), (_, texts_a, close_a) = asyncio.run(both())

    assert close_b == 1000 and close_a == 1000
    assert set(cams_b) == CAMS
    msgs_b = [json.loads(t) for t in texts_b]
    updates_b = [m for m in msgs_b if m["type"] == "tracking_update"]
    assert updates_b and all(m["task_id"] == tid for m in updates_b)
    indexes = [m["global_frame_index"] for m in updates_b]
    assert indexes == sorted(set(indexes)) and indexes[-1] == N_FRAMES - 1
    assert msgs_b[-1]["type"] == "status_update" and msgs_b[-1]["status"] == "COMPLETED"
    # B forwards A's messages byte for byte: the tracking updates both clients saw are the same texts
    common = {json.loads(t)["global_frame_index"] for t in texts_b if '"tracking_update"' in t[:30]}
    same = [t for t in texts_a if '"tracking_update"' in t[:30] and json.loads(t)["global_frame_index"] in common]
    assert same and set(same) <= set(texts_b)

    status = httpx.get(f"{b}/api/v1/processing-tasks/{tid}/status")
    assert status.status_code == 200
    body = status.json()
    assert body["status"] == "COMPLETED" and body["frames_processed"] == N_FRAMES
    assert body["camera_ids"] == ["c1", "c2", "c3", "c4"] and body["environment_id"] == "clip"
    assert httpx.post(f"{b}/api/v1/processing-tasks/{tid}/stop").status_code == 409  # only A can stop it

    late_cams, late_texts, late_close = asyncio.run(receive_all(ws_b))  # a late joiner on B, after the end
    assert late_close == 1000 and set(late_cams) == CAMS and '"COMPLETED"' in late_texts[-1]

    health = httpx.get(b + "/health").json()["components"]["state_store"]
    assert health["info"]["backend"] == "redis" and health["info"]["connected"] is True
    assert httpx.get(a + "/health").json()["components"]["state_store"]["info"]["published"] > 0

    unknown = asyncio.run(receive_all(b.replace("http://", "ws://") + "/ws/tracking/nope"))
    assert unknown[2] == 4404
    assert httpx.get(f"{b}/api/v1/processing-tasks/nope/status").status_code == 404


def test_clients_of_the_second_process_are_closed_when_the_first_dies(
    two_servers: tuple[str, Any, str, Any],
) -> None:
    a, proc_a, b, _ = two_servers  # runs last in this module: it kills A
    r = httpx.post(a + "/api/v1/processing-tasks/start", json={"environment_id": "clip-long"})
    assert r.status_code == 202, r.text
    ws_b = b.replace("http://", "ws://") + f"/ws/tracking/{r.json()['task_id']}"

    async def run() -> tuple[list[str], list[str], int | None]:
        first = asyncio.Event()
        client = asyncio.create_task(receive_all(ws_b, first))
        await asyncio.wait_for(first.wait(), 60)
        proc_a.kill()  # no close, no final status: A is just gone
        return await asyncio.wait_for(client, 60)

    cams, texts, code = asyncio.run(run())
    assert cams and code == 1011
    assert all('"COMPLETED"' not in t for t in texts)  # the task never ended: B says why it stops instead
    assert httpx.get(b + "/health").status_code == 200  # B itself is fine


def test_unreachable_redis_degrades_health_but_tasks_stream_to_local_clients(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, N_FRAMES)
    settings = Settings(
        environments_dir=tmp_path / "none",
        extra_environments=[clip],
        playback_speed=0.0,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_timeout_s=0.5,
    )
    with live_server(settings) as base:
        health = httpx.get(base + "/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        store = health.json()["components"]["state_store"]
        assert store["info"]["backend"] == "redis" and store["info"]["connected"] is False
        assert "unreachable" in store["info"]["degraded"]
        r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "clip", "camera_ids": ["c1"]})
        assert r.status_code == 202
        cams, _, code = asyncio.run(receive_all(r.json()["websocket_url"]))
        status = httpx.get(r.json()["status_url"]).json()
        assert code == 1000 and set(cams) == {"c1"} and status["status"] == "COMPLETED"
        assert status["frames_processed"] == N_FRAMES
        assert httpx.get(base + "/health").json()["components"]["state_store"]["info"]["dropped"] > 0
        # a task this process does not know cannot be looked up elsewhere: the store is down
        assert httpx.get(base + "/api/v1/processing-tasks/nope/status").status_code == 503
