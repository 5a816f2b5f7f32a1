"""``spoton bench cluster``: worker layouts side by side on this machine, and the re-queue time of a task
whose worker is killed.

For each layout ``WxS`` (W worker processes with S slots each) it starts the layout as real processes — one
API node (``serve --role api``) and W ``spoton worker``s on the configured NATS, Redis and (optionally)
PostgreSQL, under a fresh NATS and Redis prefix — starts ``tasks`` tasks on an environment, and after
``seconds`` reads every task's status: processed and skipped frames, frames/s, p99 latency, and each worker's
resident memory. With ``kill_after`` it then SIGKILLs the worker of the first task and times how long the task
takes to resume elsewhere (lease expiry + redelivery + restoring the checkpoint) — measure it with a free slot
somewhere (e.g. ``--layouts 2x1 --tasks 1``), or it includes waiting for one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from app.core.config import Settings
from app.services.environments import load_environment
from app.utils.server import free_port

PER_TASK = ("task_id", "status", "worker_id", "frames_processed", "frames_skipped", "fps", "latency_ms_p99")


@dataclass(slots=True)
class LayoutResult:
    layout: str
    tasks: int
    seconds: float
    processed_fps: float
    """Processed camera frames per second over all tasks."""
    skipped_share: float
    latency_p99_ms_max: float | None
    worker_rss_mb: list[float]
    placement: dict[str, int]
    requeue_s: float | None = None
    resumed_from_frame: int | None = None
    per_task: list[dict[str, Any]] = field(default_factory=list)


def parse_layout(text: str) -> tuple[int, int]:
    try:
        w, s = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"layout '{text}': expected WORKERSxSLOTS, e.g. 2x1") from None
    if w < 1 or s < 1:
        raise ValueError(f"layout '{text}': workers and slots must be at least 1")
    return w, s


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def run_layout(
    settings: Settings, environment: Path, layout: str, tasks: int, seconds: float, kill_after: float | None
) -> LayoutResult:
    workers, slots = parse_layout(layout)
    env_spec = load_environment(environment)
    tag = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="spoton-bench-cluster-"))
    env = {
        **os.environ,
        "SPOTON_NATS_URL": str(settings.nats_url),
        "SPOTON_REDIS_URL": str(settings.redis_url),
        "SPOTON_NATS_PREFIX": f"bench{tag}",
        "SPOTON_REDIS_KEY_PREFIX": f"spoton-bench-{tag}",
        "SPOTON_ENVIRONMENTS_DIR": str(root / "none"),
        "SPOTON_DATA_DIR": str(root / "var"),
        "SPOTON_LOG_LEVEL": "WARNING",
        "SPOTON_HISTORY_ENABLED": "true" if settings.database_url else "false",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        for i in range(workers):
            wid = f"bench-w{i + 1}"
            procs[wid] = _spawn(["worker", "--id", wid, "--slots", str(slots), "--environment", str(environment)],
                                env, root / f"{wid}.log")  # fmt: skip
        procs["api"] = _spawn(
            ["serve", "--role", "api", "--port", str(port), "--environment", str(environment)], env, root / "api.log"
        )
        _wait(lambda: _ok(base + "/health"), 180, "API node")
        ids = {f"bench-w{i + 1}" for i in range(workers)}
        _wait(lambda: ids <= {w["worker_id"] for w in _get(base + "/api/v1/workers") if w["accepting"]}, 300,
              "workers ready")  # fmt: skip
        task_ids = [
            httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": env_spec.id}, timeout=10)
            .raise_for_status()
            .json()["task_id"]
            for _ in range(tasks)
        ]
        t0 = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        statuses = [_get(f"{base}/api/v1/processing-tasks/{t}/status") for t in task_ids]
        rss = [round(psutil.Process(p.pid).memory_info().rss / 2**20, 1) for n, p in procs.items() if n != "api"]
        cams = len(env_spec.cameras)
        processed = sum(s["frames_processed"] for s in statuses) * cams
        skipped = sum(s["frames_skipped"] for s in statuses) * cams
        p99 = [s["latency_ms_p99"] for s in statuses if s["latency_ms_p99"] is not None]
        placement: dict[str, int] = {}
        for s in statuses:
            key = s["worker_id"] or "queued"
            placement[key] = placement.get(key, 0) + 1
        result = LayoutResult(
            layout=layout,
            tasks=tasks,
            seconds=round(elapsed, 1),
            processed_fps=round(processed / elapsed, 2),
            skipped_share=round(skipped / max(1, processed + skipped), 3),
            latency_p99_ms_max=max(p99) if p99 else None,
            worker_rss_mb=rss,
            placement=placement,
            per_task=[{k: s[k] for k in PER_TASK} for s in statuses],
        )
        if kill_after is not None and workers > 1:
            victim_task = next(s for s in statuses if s["worker_id"])
            victim = str(victim_task["worker_id"])
            time.sleep(kill_after)
            procs[victim].send_signal(signal.SIGKILL)
            k0 = time.monotonic()

            def resumed() -> dict[str, Any] | None:
                s = _get(f"{base}/api/v1/processing-tasks/{victim_task['task_id']}/status")
                moved = s["worker_id"] not in (None, victim) and s["resumed_from_frame"] is not None
                return s if moved and s["status"] == "PROCESSING" else None

            after = _wait(resumed, 120, "the killed worker's task to resume")
            result.requeue_s = round(time.monotonic() - k0, 2)
            result.resumed_from_frame = after["resumed_from_frame"]
        for t in task_ids:
            httpx.post(f"{base}/api/v1/processing-tasks/{t}/stop", timeout=10)
        return result
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(40)
            except subprocess.TimeoutExpired:
                p.kill()
        asyncio.run(_cleanup(settings, env["SPOTON_NATS_PREFIX"], env["SPOTON_REDIS_KEY_PREFIX"]))


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _get(url: str) -> Any:
    r = httpx.get(url, timeout=10)
    r.raise_for_status()
    return r.json()


async def _cleanup(settings: Settings, nats_prefix: str, redis_prefix: str) -> None:
    import redis.asyncio as aioredis

    from app.services.cluster.jetstream import drop_cluster
    from app.services.cluster.names import ClusterNames

    await drop_cluster(str(settings.nats_url), ClusterNames(nats_prefix))
    r = aioredis.Redis.from_url(str(settings.redis_url))
    keys = [k async for k in r.scan_iter(match=f"{redis_prefix}:*")]
    if keys:
        await r.delete(*keys)
    await r.aclose()


def print_results(results: list[LayoutResult]) -> None:
    print(f"{'layout':>8} {'tasks':>5} {'s':>5} {'proc fps':>9} {'ratio':>6} {'skipped':>8} {'p99 ms':>7} "
          f"{'worker RSS MB':>16}  placement")  # fmt: skip
    ref = results[0].processed_fps or 1.0
    for r in results:
        p99 = "-" if r.latency_p99_ms_max is None else f"{r.latency_p99_ms_max:.0f}"
        rss = "/".join(f"{m:.0f}" for m in r.worker_rss_mb)
        print(f"{r.layout:>8} {r.tasks:>5} {r.seconds:>5.0f} {r.processed_fps:>9.1f} {r.processed_fps / ref:>5.2f}x "
              f"{r.skipped_share:>7.1%} {p99:>7} {rss:>16}  {r.placement}")  # fmt: skip
        if r.requeue_s is not None:
            print(f"{'':>8} SIGKILL of a worker: its task resumed on another after {r.requeue_s:.2f} s "
                  f"(after frame {r.resumed_from_frame})")  # fmt: skip


def as_json(results: list[LayoutResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
