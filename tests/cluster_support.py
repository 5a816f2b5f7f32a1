"""Real multi-process clusters for the scale-out tests: API nodes (``spoton serve --role api``) and workers
(``spoton worker``) as OS processes, on the machine's NATS (JetStream), Redis and PostgreSQL, each cluster with
its own NATS prefix, Redis prefix and database."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets

from app.utils.server import free_port
from app.utils.wire import unpack_frame
from tests.conftest import require_service

REPO = Path(__file__).resolve().parents[1]
NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"
T = TypeVar("T")


def require_cluster_services() -> None:
    require_service("NATS", "127.0.0.1", 4222)
    require_service("Redis", "127.0.0.1", 6379)
    require_service("PostgreSQL", "127.0.0.1", 5432)


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    base: str = ""

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.args, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def stop(self, timeout: float = 40.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGCONT)
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    env_dirs: list[Path]
    apis: list[Proc] = field(default_factory=list)
    workers: dict[str, Proc] = field(default_factory=dict)

    def add_api(self) -> Proc:
        port = free_port()
        args = [sys.executable, "-m", "app.cli", "serve", "--role", "api", "--host", "127.0.0.1", "--port", str(port)]
        for d in self.env_dirs:
            args += ["--environment", str(d)]
        p = Proc(f"api{len(self.apis) + 1}", args, self.env, self.root / f"api{len(self.apis) + 1}.log")
        p.base = f"http://127.0.0.1:{port}"
        p.start()
        self.apis.append(p)
        wait_until(lambda: _healthy(p), 120, f"{p.name} healthy", p)
        return p

    def add_worker(self, worker_id: str, slots: int = 1, health_port: int | None = None) -> Proc:
        args = [sys.executable, "-m", "app.cli", "worker", "--id", worker_id, "--slots", str(slots)]
        if health_port is not None:
            args += ["--health-port", str(health_port)]
        for d in self.env_dirs:
            args += ["--environment", str(d)]
        p = Proc(worker_id, args, self.env, self.root / f"{worker_id}.log")
        p.base = "" if health_port is None else f"http://127.0.0.1:{health_port}"
        p.start()
        self.workers[worker_id] = p
        return p

    def wait_workers_ready(self, ids: list[str], timeout: float = 240.0) -> None:
        api = self.apis[0].base

        def ready() -> bool:
            ws = {w["worker_id"]: w for w in httpx.get(api + "/api/v1/workers", timeout=5).json()}
            return all(i in ws and ws[i]["accepting"] and ws[i]["alive"] for i in ids)

        wait_until(ready, timeout, f"workers {ids} accepting", *[self.workers[i] for i in ids])

    def stop_all(self) -> None:
        for p in [*self.workers.values(), *self.apis]:
            p.stop()


def _healthy(p: Proc) -> bool:
    if not p.alive():
        raise RuntimeError(f"{p.name} exited:\n{p.tail()}")
    try:
        return httpx.get(p.base + "/health", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(cond: Callable[[], T], timeout: float, what: str, *procs: Proc, every: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(every)


@contextmanager
def cluster(root: Path, env_dirs: list[Path], database: str, **settings: str) -> Iterator[Cluster]:
    """Processes share: NATS prefix, Redis prefix, PostgreSQL database; nothing is left behind."""
    require_cluster_services()
    tag = uuid.uuid4().hex[:10]
    env = {
        **os.environ,
        "SPOTON_NATS_URL": NATS_URL,
        "SPOTON_NATS_PREFIX": f"t{tag}",
        "SPOTON_REDIS_URL": REDIS_URL,
        "SPOTON_REDIS_KEY_PREFIX": f"spoton-test-{tag}",
        "SPOTON_DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
        "SPOTON_ENVIRONMENTS_DIR": str(root / "none"),
        "SPOTON_DATA_DIR": str(root / "var"),
        "SPOTON_LOG_LEVEL": "INFO",
        "SPOTON_LIVE_OWNER_TIMEOUT_S": "2",
        "SPOTON_HISTORY_FLUSH_INTERVAL_S": "0.2",
        **{f"SPOTON_{k.upper()}": v for k, v in settings.items()},
    }
    c = Cluster(root, env, env_dirs)
    with ExitStack() as stack:
        stack.callback(lambda: asyncio.run(_cleanup(env["SPOTON_NATS_PREFIX"], env["SPOTON_REDIS_KEY_PREFIX"])))
        stack.callback(c.stop_all)
        yield c


async def _cleanup(nats_prefix: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    from app.services.cluster.jetstream import drop_cluster
    from app.services.cluster.names import ClusterNames

    await drop_cluster(NATS_URL, ClusterNames(nats_prefix))
    r = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in r.scan_iter(match=f"{redis_prefix}:*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


# -- the API, from the tests' side -----------------------------------------------------------------
def start_task(api: str, environment_id: str) -> str:
    r = httpx.post(api + "/api/v1/processing-tasks/start", json={"environment_id": environment_id}, timeout=10)
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def status(api: str, task_id: str) -> dict[str, Any]:
    r = httpx.get(f"{api}/api/v1/processing-tasks/{task_id}/status", timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@dataclass
class Stream:
    """What a WebSocket client received: every message in order (frames as ``(camera, frame_index)``)."""

    items: list[tuple[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @property
    def texts(self) -> list[dict[str, Any]]:
        return [v for k, v in self.items if k == "json"]

    @property
    def updates(self) -> list[dict[str, Any]]:
        return [m for m in self.texts if m.get("type") == "tracking_update"]

    @property
    def statuses(self) -> list[dict[str, Any]]:
        return [m for m in self.texts if m.get("type") == "status_update"]

    @property
    def frames(self) -> list[Any]:
        return [v for k, v in self.items if k == "frame"]


async def receive(url: str, stream: Stream, until: float = 300.0) -> Stream:
    async with websockets.connect(url, compression=None, max_size=2**24, open_timeout=20) as ws:
        try:
            async with asyncio.timeout(until):
                async for m in ws:
                    if isinstance(m, bytes):
                        head = unpack_frame(m)[0]
                        stream.items.append(("frame", (head.camera_id, head.frame_index)))
                    else:
                        stream.items.append(("json", json.loads(m)))
        except websockets.ConnectionClosed:
            pass
    stream.close_code = ws.close_code
    return stream


def ws_url(api: str, task_id: str) -> str:
    return api.replace("http://", "ws://") + f"/ws/tracking/{task_id}"
