"""``spoton`` command line: serve, demo, watch, build-demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Generator
from pathlib import Path

import httpx
import uvicorn

from app.core.config import Settings
from app.core.logging import setup_logging

log = logging.getLogger("spoton")


def _uvicorn_config(app: object, host: str, port: int, log_level: str) -> uvicorn.Config:
    # permessage-deflate costs ~30x throughput on JPEG frames that do not compress anyway.
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level.lower(),
        ws_per_message_deflate=False,
        ws_max_size=1 << 20,
        lifespan="on",
    )


class _EmbeddedServer(uvicorn.Server):
    """A server inside our own event loop: the demo handles Ctrl-C itself (stop the task, then exit)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def cmd_serve(args: argparse.Namespace) -> int:
    from app.main import create_app

    settings = Settings()
    settings.extra_environments = [*settings.extra_environments, *[Path(p) for p in args.environment]]
    host = args.host or settings.host
    port = args.port or settings.port
    setup_logging(settings.log_level)
    server = uvicorn.Server(_uvicorn_config(create_app(settings), host, port, settings.log_level))
    server.run()
    return 0


def build_demo(settings: Settings, force: bool = False, max_frames: int | None = None) -> Path:
    from app.demo.build_demo import build_demo_environment
    from app.demo.video_source import obtain_demo_video

    video = obtain_demo_video(settings)
    out = settings.data_dir / "demo" / "environment"
    return build_demo_environment(video, out, force=force, max_frames=max_frames)


def cmd_build_demo(args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    print(build_demo(settings, force=args.force))
    return 0


async def _wait_healthy(base: str, server: uvicorn.Server, timeout: float = 600.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.should_exit:
                raise RuntimeError("server stopped during start-up")
            with contextlib.suppress(httpx.TransportError):
                r = await client.get("/health")
                body: dict[str, object] = r.json()
                if r.status_code == 200:
                    return body
                if body.get("status") == "unhealthy":
                    raise RuntimeError(f"server unhealthy: {body}")
            await asyncio.sleep(0.5)
    raise TimeoutError("server did not become healthy in time")


async def _demo(settings: Settings, env_dir: Path, host: str, port: int, stay: bool) -> int:
    from app.client import WatchSummary, watch
    from app.main import create_app

    settings.extra_environments = [*settings.extra_environments, env_dir]
    server = _EmbeddedServer(_uvicorn_config(create_app(settings), host, port, "warning"))
    serve = asyncio.create_task(server.serve())
    base = f"http://{host}:{port}"
    task_id: str | None = None
    loop = asyncio.get_running_loop()
    interrupted = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupted.set)
    try:
        t0 = time.monotonic()
        print(f"SpotOn demo: starting server on {base} (loading and warming models) ...", flush=True)
        health = await _wait_healthy(base, server)
        print(f"server {health['status']} after {time.monotonic() - t0:.1f}s", flush=True)
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
            r = await client.post("/api/v1/processing-tasks/start", json={"environment_id": "demo-pets-4cam"})
            r.raise_for_status()
            started = r.json()
        task_id = started["task_id"]
        print(f"task {task_id} started\n  status:    {started['status_url']}\n"
              f"  websocket: {started['websocket_url']}\n  api docs:  {base}/docs\n"
              f"  watch it:  spoton watch {task_id} --url {base}\n", flush=True)

        def tick(s: WatchSummary) -> None:
            print(s.line(), flush=True)

        watcher = asyncio.create_task(watch(started["websocket_url"], on_tick=tick, tick_s=2.0))
        stop_wait = asyncio.create_task(interrupted.wait())
        await asyncio.wait({watcher, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if interrupted.is_set():
            print("\ninterrupted: stopping the task ...", flush=True)
            async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
                await client.post(f"/api/v1/processing-tasks/{task_id}/stop")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(watcher, 15)
        else:
            summary = watcher.result()
            st = summary.last_status
            print(
                f"\ntask finished: {st.get('status')} — {st.get('frames_processed')} global frames processed, "
                f"{len(summary.global_ids)} global ids, {sum(summary.frames_received.values())} JPEGs received "
                f"in {time.monotonic() - t0:.0f}s",
                flush=True,
            )
            if stay:
                print(f"server still up at {base} — Ctrl-C to stop", flush=True)
                await interrupted.wait()
        stop_wait.cancel()
        status = "COMPLETED"
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
            status = (await client.get(f"/api/v1/processing-tasks/{task_id}/status")).json()["status"]
        return 0 if status in ("COMPLETED", "STOPPED") else 1
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serve, 30)


def cmd_demo(args: argparse.Namespace) -> int:
    settings = Settings()
    setup_logging(settings.log_level)
    t0 = time.monotonic()
    env_dir = build_demo(settings, force=args.rebuild, max_frames=args.max_frames)
    print(f"demo environment ready in {time.monotonic() - t0:.1f}s: {env_dir}", flush=True)
    host = args.host or settings.host
    port = args.port or settings.port
    return asyncio.run(_demo(settings, env_dir, host, port, args.stay))


def cmd_watch(args: argparse.Namespace) -> int:
    from app.client import WatchSummary, watch

    base = args.url.rstrip("/")
    ws_url = base.replace("http://", "ws://").replace("https://", "wss://") + f"/ws/tracking/{args.task_id}"
    tty = sys.stdout.isatty()

    def tick(s: WatchSummary) -> None:
        print(("\r" if tty else "") + s.line(), end="" if tty else "\n", flush=True)

    save = Path(args.save_frames) if args.save_frames else None
    try:
        summary = asyncio.run(watch(ws_url, save_dir=save, on_tick=tick, max_seconds=args.seconds))
    except KeyboardInterrupt:
        return 130
    print(f"\nclosed: code {summary.close_code} {summary.close_reason}")
    return 0 if summary.close_code in (1000, None) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spoton", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the API server")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--environment", action="append", default=[], metavar="PATH",
                   help="environment file or dataset folder to serve (repeatable)")
    s.set_defaults(fn=cmd_serve)

    d = sub.add_parser("demo", help="build the 4-camera demo, serve it and run a task with live progress")
    d.add_argument("--host")
    d.add_argument("--port", type=int)
    d.add_argument("--rebuild", action="store_true", help="rebuild the demo environment")
    d.add_argument("--stay", action="store_true", help="keep serving after the task ends (Ctrl-C stops)")
    d.add_argument("--max-frames", type=int, help="use only the first N frames of the video (a quick look)")
    d.set_defaults(fn=cmd_demo)

    b = sub.add_parser("build-demo", help="only build the demo environment and print its folder")
    b.add_argument("--force", action="store_true")
    b.set_defaults(fn=cmd_build_demo)

    w = sub.add_parser("watch", help="print a live summary of a task's WebSocket stream")
    w.add_argument("task_id")
    w.add_argument("--url", default=os.environ.get("SPOTON_URL", "http://127.0.0.1:8000"))
    w.add_argument("--save-frames", metavar="DIR", help="write received JPEGs to DIR/<camera>/<frame>.jpg")
    w.add_argument("--seconds", type=float, help="stop after this many seconds")
    w.set_defaults(fn=cmd_watch)

    args = p.parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
