"""Live-state fan-out through Redis, measured: ``python -m app.bench.live_state_bench [--redis URL]``.

Two ``RedisLiveState`` objects stand for two API processes: hub A publishes frames (random bytes of a
JPEG's size) and a ``tracking_update`` per global frame at a camera rate, paced as live; hub B follows the
task and one client of B reads everything. Reported: the cost of a publish call on A's event loop (what the
pipeline pays), frame latency from publish on A to B's client outbox (the bus hop; same host, so the wall
clocks agree), frames delivered and dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from typing import Any

import numpy as np

from app.services.notifications import FrameMessage, NotificationHub
from app.stores.redis_live_state import RedisLiveState


async def run_live_state_bench(
    url: str, *, cameras: int = 4, fps: float = 7.0, seconds: float = 10.0, frame_kb: int = 40
) -> dict[str, Any]:
    prefix = f"spoton-bench-{uuid.uuid4().hex[:8]}"
    a, b = RedisLiveState(url, prefix=prefix), RedisLiveState(url, prefix=prefix)
    await a.start()
    await b.start()
    if not (a.connected and b.connected):
        raise RuntimeError(a.detail or b.detail)
    hub_a, hub_b = NotificationHub(live=a), NotificationHub(live=b)
    hub_a.open_task("bench")
    a.register_task("bench", lambda: {"task_id": "bench"})
    await a.flush(2.0)
    if not await hub_b.follow("bench"):
        raise RuntimeError("follower did not find the task")
    box = hub_b.subscribe("bench")
    latencies: list[float] = []
    received = 0

    async def reader() -> None:
        nonlocal received
        while True:
            msg = await box.get()
            if msg.kind == "close":
                return
            if msg.kind == "bytes" and msg.decoded_at is not None:
                received += 1
                latencies.append((time.monotonic() - msg.decoded_at) * 1000.0)

    client = asyncio.create_task(reader())
    payloads = [os.urandom(frame_kb * 1024) for _ in range(8)]
    publish_us: list[float] = []
    n_global = int(seconds * fps)
    start = time.monotonic()
    for g in range(n_global):
        await asyncio.sleep(max(0.0, start + g / fps - time.monotonic()))
        now = time.monotonic()
        t0 = time.perf_counter()
        for c in range(cameras):
            hub_a.publish_frame("bench", FrameMessage(f"c{c + 1}", payloads[(g + c) % len(payloads)], now))
        hub_a.publish_json("bench", {"type": "tracking_update", "global_frame_index": g, "cameras": {}})
        publish_us.append((time.perf_counter() - t0) * 1e6 / (cameras + 1))
    hub_a.close_task("bench")
    await asyncio.wait_for(client, 30)
    stats = a.health().info
    await a.close()
    await b.close()
    await _delete_keys(url, prefix)
    lat = np.asarray(latencies)
    return {
        "frames_published": n_global * cameras,
        "frames_received": received,
        "frames_dropped_by_store": stats["dropped"],
        "mib_per_s": round(cameras * fps * frame_kb / 1024, 2),
        "publish_call_us_mean": round(float(np.mean(publish_us)), 1),
        "bus_latency_ms": {
            p: round(float(np.percentile(lat, q)), 2) for p, q in (("p50", 50), ("p95", 95), ("p99", 99))
        },
    }


async def _delete_keys(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in r.scan_iter(match=f"{prefix}:*")]
        if keys:
            await r.delete(*keys)
    finally:
        await r.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=7.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--frame-kb", type=int, default=40)
    args = ap.parse_args()
    report = asyncio.run(
        run_live_state_bench(
            args.redis, cameras=args.cameras, fps=args.fps, seconds=args.seconds, frame_kb=args.frame_kb
        )
    )
    for k, v in report.items():
        print(f"{k:>24}: {v}")


if __name__ == "__main__":
    main()
