"""``spoton bench pipeline``: the whole product under load, measured from the outside.

It starts the real server in-process, runs a task on an environment (the demo by default) with one real
WebSocket client reading everything, and reports what a user would see: processed frames/s per camera,
skipped frames, frame→send latency, per-stage milliseconds, the share of busy time spent outside the
models, and event-loop lag. The timeline (one point per ``status_update``) goes into the JSON and a PNG.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import websockets

from app.core.config import Settings
from app.services.environments import load_environment
from app.utils.server import EmbeddedServer, free_port, uvicorn_config, wait_healthy


async def run_pipeline_bench(
    environment: Path,
    *,
    seconds: float = 60.0,
    cameras: int | None = None,
    pacing: bool = True,
    settings: Settings | None = None,
    speed: float = 1.0,
) -> dict[str, Any]:
    from app.main import create_app

    env = load_environment(environment)
    cam_ids = list(env.cameras)[: cameras or None]
    base_settings = settings or Settings()
    s = base_settings.model_copy(
        update={
            "extra_environments": [environment],
            "environments_dir": Path("/nonexistent-spoton-bench"),
            "playback_speed": speed if pacing else 0.0,
        }
    )
    port = free_port()
    server = EmbeddedServer(uvicorn_config(create_app(s), "127.0.0.1", port, "warning"))
    serve = asyncio.create_task(server.serve())
    base = f"http://127.0.0.1:{port}"
    timeline: list[dict[str, Any]] = []
    received = {"frames": 0, "bytes": 0, "tracking_updates": 0}
    try:
        await wait_healthy(base, server)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            r = await client.post(
                "/api/v1/processing-tasks/start", json={"environment_id": env.id, "camera_ids": cam_ids}
            )
            r.raise_for_status()
            started = r.json()
            t0 = time.monotonic()
            async with websockets.connect(started["websocket_url"], compression=None, max_size=2**24) as ws:
                with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
                    while time.monotonic() - t0 < seconds:
                        m = await asyncio.wait_for(ws.recv(), timeout=max(0.1, seconds - (time.monotonic() - t0)))
                        if isinstance(m, bytes):
                            received["frames"] += 1
                            received["bytes"] += len(m)
                            continue
                        data = json.loads(m)
                        if data["type"] == "tracking_update":
                            received["tracking_updates"] += 1
                        elif data["type"] == "status_update" and data["status"] == "PROCESSING":
                            timeline.append({"t": round(time.monotonic() - t0, 2), **_point(data)})
            elapsed = time.monotonic() - t0
            await client.post(f"/api/v1/processing-tasks/{started['task_id']}/stop")
            final: dict[str, Any] = (await client.get(f"/api/v1/processing-tasks/{started['task_id']}/status")).json()
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve, 30)
    return _report(env.id, cam_ids, speed if pacing else 0.0, elapsed, final, timeline, received)


def _point(status: dict[str, Any]) -> dict[str, Any]:
    send = status.get("send_latency_ms") or {}
    return {
        "fps_per_camera": status["fps"]["per_camera"],
        "latency_p50_ms": status["latency_ms"]["p50"],
        "latency_p99_ms": status["latency_ms"]["p99"],
        "send_p99_ms": max((v["p99"] for v in send.values()), default=None),
        "frames_skipped": status["frames_skipped"],
        "jpeg_quality": status.get("jpeg_quality"),
        "loop_lag_p99_ms": (status.get("event_loop_lag_ms") or {}).get("p99"),
    }


def _report(
    env_id: str,
    cams: list[str],
    speed: float,
    elapsed: float,
    final: dict[str, Any],
    timeline: list[dict[str, Any]],
    received: dict[str, int],
) -> dict[str, Any]:
    processed = final["frames_processed"]
    per_cam = {c: round(processed / elapsed, 2) for c in cams}
    send = final.get("send_latency_ms") or {}
    lag = [p["loop_lag_p99_ms"] for p in timeline if p.get("loop_lag_p99_ms") is not None]
    return {
        "environment": env_id,
        "cameras": cams,
        "pacing": f"{speed:g}x" if speed > 0 else "none",
        "seconds": round(elapsed, 1),
        "global_frames_processed": processed,
        "global_frames_skipped": final["frames_skipped"],
        "processed_fps_per_camera": per_cam,
        "processed_fps_total": round(sum(per_cam.values()), 2),
        "latency_ms_decode_to_publish": {
            "p50": final["latency_ms_p50"],
            "p95": final["latency_ms_p95"],
            "p99": final["latency_ms_p99"],
        },
        "latency_ms_decode_to_send": send,
        "stage_ms": final["stage_ms"],
        "outside_models_share": final["outside_models_share"],
        "event_loop_lag_p99_ms_max": max(lag, default=None),
        "client_received": received,
        "timeline": timeline,
    }


def print_report(r: dict[str, Any]) -> None:
    send_p99 = max((v["p99"] for v in r["latency_ms_decode_to_send"].values()), default=None)
    send_p50 = max((v["p50"] for v in r["latency_ms_decode_to_send"].values()), default=None)
    print(
        f"pipeline bench: {r['environment']} cameras {','.join(r['cameras'])}, pacing {r['pacing']}, {r['seconds']} s"
    )
    print(f"  processed frames/s per camera: {r['processed_fps_per_camera']}  total {r['processed_fps_total']}")
    print(f"  global frames processed {r['global_frames_processed']}, skipped {r['global_frames_skipped']}")
    lat = r["latency_ms_decode_to_publish"]
    print(f"  frame→publish latency ms: p50 {lat['p50']}  p95 {lat['p95']}  p99 {lat['p99']}")
    print(f"  frame→WebSocket send latency ms (worst camera): p50 {send_p50}  p99 {send_p99}")
    print(f"  stage ms (mean): {r['stage_ms']}")
    share = r["outside_models_share"]
    print(f"  share of busy time outside the models: {share if share is None else f'{share:.1%}'}")
    print(f"  event-loop lag p99 (worst interval): {r['event_loop_lag_p99_ms_max']} ms")
    print(f"  client received: {r['client_received']}")


def variant_settings(base: Settings, spec: str) -> Settings:
    """``base`` with ``key=value[,key=value...]`` applied (setting names as in ``Settings``, validated)."""
    updates: dict[str, str] = {}
    for item in (p for p in spec.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        key = key.strip().lower().removeprefix("spoton_")
        if not sep or key not in Settings.model_fields:
            raise ValueError(f"--compare {spec!r}: use setting=value pairs (e.g. nanodet_precision=fp32)")
        updates[key] = value.strip()
    return Settings.model_validate({**base.model_dump(), **updates})


def print_comparison(rows: list[tuple[str, dict[str, Any]]]) -> None:
    """One line per variant, measured in one run; ratios against the first."""
    first = rows[0][1]["processed_fps_total"] or 1e-9
    stages = sorted({k for _, r in rows for k in r["stage_ms"]})
    print("| variant | processed fps (total) | ratio | skipped | frame→publish p99 ms | " + " | ".join(
        f"{k} ms" for k in stages) + " |")
    print("|---|---|---|---|---|" + "---|" * len(stages))
    for name, r in rows:
        lat = r["latency_ms_decode_to_publish"]["p99"]
        cells = " | ".join(f"{r['stage_ms'].get(k, 0):.1f}" for k in stages)
        print(
            f"| {name} | {r['processed_fps_total']:.1f} | {r['processed_fps_total'] / first:.2f}× | "
            f"{r['global_frames_skipped']} | {lat} | {cells} |"
        )


def plot_timeline(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = r["timeline"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    t = [p["t"] for p in tl]
    ax1.plot(t, [p["latency_p50_ms"] for p in tl], label="frame→publish p50")
    ax1.plot(t, [p["latency_p99_ms"] for p in tl], label="frame→publish p99")
    ax1.plot(t, [p["send_p99_ms"] for p in tl], label="frame→WebSocket send p99 (worst camera)")
    ax1.set_ylabel("ms")
    ax1.legend(loc="upper right")
    ax1.set_title(f"SpotOn pipeline — {r['environment']}, pacing {r['pacing']}")
    for cam in r["cameras"]:
        ax2.plot(t, [p["fps_per_camera"].get(cam) for p in tl], label=cam)
    ax2.set_ylabel("processed frames/s")
    ax2.set_xlabel("seconds")
    ax2.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
