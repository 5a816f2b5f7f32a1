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
import webbrowser
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from app.core.config import Settings
from app.core.logging import setup_logging
from app.utils.server import EmbeddedServer, uvicorn_config, wait_healthy

log = logging.getLogger("spoton")
COMPAT_PORT = 3847
"""The original SpotOn frontend's hard-coded backend port."""
COMPAT_ORIGINS = "http://localhost:5173,http://127.0.0.1:5173,http://localhost:4173,http://127.0.0.1:4173"
"""Where its Vite dev server (5173) and preview (4173) serve it: the CORS default with --frontend-compat."""


def cmd_serve(args: argparse.Namespace) -> int:
    from app.main import create_app

    settings = Settings()
    settings.extra_environments = [*settings.extra_environments, *[Path(p) for p in args.environment]]
    if args.role:
        if not settings.nats_url:
            print(f"spoton serve --role {args.role}: set SPOTON_NATS_URL (the cluster's task queue)", file=sys.stderr)
            return 2
        settings.role = args.role
    host = args.host or settings.host
    port = args.port or settings.port
    if args.frontend_compat:
        settings.frontend_compat = True
        settings.cors_origins = settings.cors_origins or COMPAT_ORIGINS
        port = args.port or COMPAT_PORT
    setup_logging(settings.log_level)
    server = uvicorn.Server(uvicorn_config(create_app(settings), host, port, settings.log_level))
    server.run()
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from app.services.cluster.worker_process import run_worker

    settings = Settings()
    if not settings.nats_url:
        print("spoton worker: set SPOTON_NATS_URL (the cluster's task queue; docs/scale-out.md)", file=sys.stderr)
        return 2
    settings.extra_environments = [*settings.extra_environments, *[Path(p) for p in args.environment]]
    settings.role = "worker"
    if args.slots is not None:
        if args.slots < 1:
            print("spoton worker: --slots must be at least 1", file=sys.stderr)
            return 2
        settings.worker_slots = args.slots
    if args.worker_id:
        settings.worker_id = args.worker_id
    if args.health_port is not None:
        settings.worker_health_port = args.health_port
    setup_logging(settings.log_level)
    return asyncio.run(run_worker(settings))


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


async def _demo(settings: Settings, env_dir: Path, host: str, port: int, stay: bool, open_browser: bool = False) -> int:
    from app.client import WatchSummary, watch
    from app.main import create_app

    settings.extra_environments = [*settings.extra_environments, env_dir]
    server = EmbeddedServer(uvicorn_config(create_app(settings), host, port, "warning"))
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
        health = await wait_healthy(base, server)
        print(f"server {health['status']} after {time.monotonic() - t0:.1f}s", flush=True)
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as client:
            r = await client.post("/api/v1/processing-tasks/start", json={"environment_id": "demo-pets-4cam"})
            r.raise_for_status()
            started = r.json()
        task_id = started["task_id"]
        viewer = f"{base}/?task={task_id}"
        print(
            f"task {task_id} started\n  viewer:    {viewer}\n  status:    {started['status_url']}\n"
            f"  websocket: {started['websocket_url']}\n  api docs:  {base}/docs\n"
            f"  watch it:  spoton watch {task_id} --url {base}\n",
            flush=True,
        )

        if open_browser and not webbrowser.open(viewer):
            print("no system browser found: open the viewer URL above by hand", flush=True)

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
    host = args.host or settings.host
    port = args.port or settings.port
    if args.frontend_compat:
        settings.frontend_compat = True
        settings.cors_origins = settings.cors_origins or COMPAT_ORIGINS
        port = args.port or COMPAT_PORT
    print(f"SpotOn viewer: http://{host}:{port}/  (live once the server is up)", flush=True)
    t0 = time.monotonic()
    env_dir = build_demo(settings, force=args.rebuild, max_frames=args.max_frames)
    print(f"demo environment ready in {time.monotonic() - t0:.1f}s: {env_dir}", flush=True)
    return asyncio.run(_demo(settings, env_dir, host, port, args.stay, args.open))


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


def cmd_bench_pipeline(args: argparse.Namespace) -> int:
    import json

    from app.bench.pipeline_bench import (
        plot_timeline,
        print_comparison,
        print_report,
        run_pipeline_bench,
        variant_settings,
    )

    settings = Settings()
    setup_logging("WARNING")
    try:
        variants = [("current settings", settings)] + [(c, variant_settings(settings, c)) for c in args.compare]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = Path(args.environment) if args.environment else build_demo(settings)
    rows = []
    for name, s in variants:
        report = asyncio.run(
            run_pipeline_bench(
                env, seconds=args.seconds, cameras=args.cameras, pacing=not args.no_pacing, settings=s, speed=args.speed
            )
        )
        print(f"[{name}]")
        print_report(report)
        rows.append((name, report))
    if len(rows) > 1:
        print_comparison(rows)
    if args.out:
        out = Path(args.out)
        out.write_text(json.dumps(rows[0][1] if len(rows) == 1 else dict(rows), indent=2))
        png = out.with_suffix(".png")
        plot_timeline(rows[0][1], png)
        print(f"  wrote {out} and {png}")
    return 0


def cmd_bench_cluster(args: argparse.Namespace) -> int:
    import json

    from app.bench.cluster_bench import as_json, parse_layout, print_results, run_layout

    settings = Settings()
    if not settings.nats_url or not settings.redis_url:
        print("spoton bench cluster: set SPOTON_NATS_URL and SPOTON_REDIS_URL", file=sys.stderr)
        return 2
    layouts = _csv(args.layouts)
    try:
        for layout in layouts:
            parse_layout(layout)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging("WARNING")
    env = Path(args.environment) if args.environment else build_demo(settings)
    results = []
    for layout in layouts:
        print(f"layout {layout}: {args.tasks} task(s) for {args.seconds:g} s on {env} ...", flush=True)
        results.append(run_layout(settings, env, layout, args.tasks, args.seconds, args.kill_after))
    print_results(results)
    if args.out:
        Path(args.out).write_text(json.dumps(as_json(results), indent=2))
    return 0


def cmd_bench_websocket(args: argparse.Namespace) -> int:
    import json

    from app.bench.websocket_bench import print_report, run_websocket_bench

    rows = asyncio.run(run_websocket_bench(args.messages, args.size_kb))
    print_report(rows)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_bench_detector(args: argparse.Namespace) -> int:
    import json

    from app.bench.detector_bench import BenchCase, run_detector_bench, table, to_json

    settings = Settings()
    setup_logging("WARNING")
    if settings.torch_threads > 0:
        import torch

        torch.set_num_threads(settings.torch_threads)
    try:
        batches = [int(b) for b in _csv(args.batch)]
    except ValueError:
        print(f"--batch: expected comma-separated integers, got {args.batch!r}", file=sys.stderr)
        return 2

    def progress(c: BenchCase) -> None:
        print(f"  {c.detector} {c.precision} batch {c.batch} {c.resolution}: {c.ms_per_image_median:.1f} ms/image "
              f"(p95 {c.ms_per_image_p95:.1f}), {c.images_per_s:.2f} images/s", flush=True)

    try:
        cases = run_detector_bench(
            settings, _csv(args.detectors), batches, _csv(args.resolution), _csv(args.precision),
            iterations=args.iterations, max_seconds=args.max_seconds, on_case=progress,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n" + table(cases))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(cases, settings), indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_eval_detector(args: argparse.Namespace) -> int:
    import json

    from app.evaluation.detector_eval import evaluate_detectors
    from app.evaluation.tracking_eval import DatasetError

    settings = Settings()
    setup_logging("WARNING")
    t0 = time.monotonic()

    def progress(n: int) -> None:
        if n % 50 == 0:
            print(f"  {n} frames ({time.monotonic() - t0:.0f}s)", flush=True)

    try:
        report = evaluate_detectors(
            Path(args.dataset), settings, _csv(args.detectors), frame_step=args.frame_step, on_progress=progress
        )
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{report.dataset}: frames {report.frames[0]}–{report.frames[1]} every {report.frame_step}, "
          f"{report.images} images, {report.gt_boxes} ground-truth boxes (* = what SPOTON_DETECTOR runs)\n")
    print(report.table())
    for s in report.scores:
        print(f"  {s.variant}: {s.seconds:.1f}s detecting ({s.ms_per_image:.0f} ms/image)")
    for name, why in report.unavailable.items():
        print(f"  {name}: unavailable — {why}")
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_json(), indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_bench_jpeg(args: argparse.Namespace) -> int:
    import json

    import cv2
    import numpy as np

    from app.bench.jpeg_bench import print_report, run_jpeg_bench
    from app.demo.video_source import obtain_demo_video

    settings = Settings()
    setup_logging("WARNING")
    cap = cv2.VideoCapture(str(Path(args.image) if args.image else obtain_demo_video(settings)))
    for _ in range(100):  # a frame with people in it
        ok, frame = cap.read()
    cap.release()
    if not ok:
        print("could not read a frame", file=sys.stderr)
        return 2
    rows = run_jpeg_bench(np.asarray(frame, np.uint8), repeats=args.repeats)
    print_report(rows)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Full pipeline over datasets with ground truth: MOTA / IDF1 / HOTA per camera and across cameras, one
    report per dataset and, for several, a table with one row each."""
    import json

    from app.evaluation.tracking_eval import DatasetError, evaluate, summary_table
    from app.services.environments import EnvironmentError_
    from app.services.video_data_manager import VideoSourceError

    settings = Settings()
    setup_logging("WARNING")
    tty = sys.stderr.isatty()

    def progress(n: int) -> None:
        if tty and n % 10 == 0:
            print(f"\r{n} global frames processed", end="", file=sys.stderr, flush=True)

    if (args.record or args.replay) and len(args.dataset) != 1:
        print("spoton eval: --record and --replay take one dataset", file=sys.stderr)
        return 2
    reports = []
    for dataset in args.dataset:
        try:
            if args.record or args.replay:
                report = _eval_recorded(Path(dataset), settings, args.record, args.replay, args.max_frames)
            else:
                report = evaluate(Path(dataset), settings, max_frames=args.max_frames, on_frame=progress)
        except (DatasetError, EnvironmentError_, VideoSourceError, OSError, ValueError) as exc:
            print(f"spoton eval: {exc}", file=sys.stderr)
            return 2
        if tty:
            print(file=sys.stderr)
        print(report.table(), end="\n\n", flush=True)
        reports.append(report)
    if len(reports) > 1:
        print(summary_table(reports))
    if args.out:
        body = reports[0].to_dict() if len(reports) == 1 else [r.to_dict() for r in reports]
        Path(args.out).write_text(json.dumps(body, indent=2))
        print(f"wrote {args.out}")
    return 0


def cmd_derive_narrow_views(args: argparse.Namespace) -> int:
    """A re-entry test set: every camera of a labelled dataset keeps part of its width (`narrow_views`)."""
    from app.evaluation.narrow_views import derive
    from app.evaluation.tracking_eval import DatasetError

    setup_logging("WARNING")
    try:
        p = derive(
            Path(args.source),
            Path(args.out),
            keep=args.keep,
            force=args.force,
            on_camera=lambda cid: print(f"cropping {cid}", file=sys.stderr, flush=True),
        )
    except (DatasetError, OSError, ValueError) as exc:
        print(f"spoton derive-narrow-views: {exc}", file=sys.stderr)
        return 2
    sides = " ".join(f"{c}={s}[{w.x0}:{w.x1}]" for (c, s), w in zip(p.sides.items(), p.windows.values(), strict=True))
    print(f"{args.out}: {sides}; {p.reentries} re-entries of {p.people} people, {p.boxes} boxes")
    return 0


def _eval_recorded(
    directory: Path, settings: Settings, record_to: str | None, replay_from: str | None, max_frames: int | None
) -> Any:
    """``--record``: a full run that also saves the identity layer's inputs; ``--replay``: the identity layer
    alone over such a file, in seconds (for tuning identity settings; boxes are those of the recorded run)."""
    from app.evaluation.identity_replay import record, replay
    from app.evaluation.observation_log import ObservationLog
    from app.evaluation.tracking_eval import load_dataset, score

    dataset = load_dataset(directory)
    if replay_from:
        out = replay(ObservationLog.load(Path(replay_from)), dataset, settings)
    else:
        assert record_to is not None
        out = record(dataset, settings, Path(record_to), ["efficientnet_lite0", "part_colour"], max_frames)
    last = None if max_frames is None else dataset.first_frame + max_frames - 1
    return score(dataset, out, last_frame=last)


def cmd_keys_add(args: argparse.Namespace) -> int:
    """Create a key, store only its hash in the keys file, print the key once."""
    import json

    from app.core.security import Role, digest, new_key

    path = Path(args.file)
    try:
        entries = json.loads(path.read_text()) if path.exists() else []
    except ValueError as exc:
        print(f"spoton keys: {path} is not a keys file: {exc}", file=sys.stderr)
        return 2
    if not isinstance(entries, list) or any(isinstance(e, dict) and e.get("name") == args.name for e in entries):
        print(f"spoton keys: {path} is not a list of keys, or already has a key named '{args.name}'", file=sys.stderr)
        return 2
    key = new_key()
    entry: dict[str, Any] = {"name": args.name, "role": Role[args.role].name, "sha256": digest(key)}
    if args.environment:
        entry["environments"] = list(args.environment)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps([*entries, entry], indent=2))
    tmp.chmod(0o600)
    tmp.replace(path)
    print(key)
    print(f"stored the hash of key '{args.name}' ({args.role}) in {path}; the key is shown only now", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spoton", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the API server")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument(
        "--frontend-compat",
        action="store_true",
        help=f"serve the original SpotOn frontend's API too (default port {COMPAT_PORT}; docs/frontend-compat.md)",
    )
    s.add_argument(
        "--environment",
        action="append",
        default=[],
        metavar="PATH",
        help="environment file or dataset folder to serve (repeatable)",
    )
    s.add_argument(
        "--role",
        choices=["api", "all"],
        help="with SPOTON_NATS_URL: api (no models; tasks run on `spoton worker`s) or all (API and a worker; "
        "the default with NATS). Without NATS the server runs its tasks itself.",
    )
    s.set_defaults(fn=cmd_serve)

    wk = sub.add_parser("worker", help="run tasks from the cluster's queue (SPOTON_NATS_URL; docs/scale-out.md)")
    wk.add_argument("--slots", type=int, help="tasks at once (SPOTON_WORKER_SLOTS, default 1)")
    wk.add_argument("--id", dest="worker_id", help="name in GET /api/v1/workers (default: <host>-<pid>)")
    wk.add_argument("--health-port", type=int, help="answer GET /health on this port (SPOTON_WORKER_HEALTH_PORT)")
    wk.add_argument(
        "--environment",
        action="append",
        default=[],
        metavar="PATH",
        help="environment file or dataset folder (repeatable; also SPOTON_ENVIRONMENTS_DIR)",
    )
    wk.set_defaults(fn=cmd_worker)

    d = sub.add_parser("demo", help="build the 4-camera demo, serve it and run a task with live progress")
    d.add_argument("--host")
    d.add_argument("--port", type=int)
    d.add_argument("--rebuild", action="store_true", help="rebuild the demo environment")
    d.add_argument("--stay", action="store_true", help="keep serving after the task ends (Ctrl-C stops)")
    d.add_argument(
        "--frontend-compat",
        action="store_true",
        help=f"also serve the original SpotOn frontend's API (default port {COMPAT_PORT}); the demo is 'campus'",
    )
    d.add_argument("--open", action="store_true", help="open the viewer in the system browser, when there is one")
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

    bench = sub.add_parser("bench", help="benchmarks that print figures").add_subparsers(dest="bench", required=True)
    bp = bench.add_parser("pipeline", help="the whole pipeline on an environment (default: the demo)")
    bp.add_argument("--environment", metavar="PATH", help="environment file or dataset folder")
    bp.add_argument("--seconds", type=float, default=60.0)
    bp.add_argument("--cameras", type=int, help="use the first K cameras")
    bp.add_argument("--no-pacing", action="store_true", help="process every frame as fast as possible")
    bp.add_argument(
        "--speed", type=float, default=1.0, help="play at this multiple of the video's rate (10/7 ≈ 1.43: 7 fps as 10)"
    )
    bp.add_argument("--out", metavar="FILE.json", help="write JSON and a PNG plot beside it")
    bp.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="SETTING=VALUE[,...]",
        help="also run with these settings changed (repeatable); prints a table with ratios to the first run",
    )
    bp.set_defaults(fn=cmd_bench_pipeline)
    bc = bench.add_parser("cluster", help="worker layouts side by side on NATS (and re-queue time after SIGKILL)")
    bc.add_argument("--layouts", default="1x2,2x1", help="comma-separated WORKERSxSLOTS (default 1x2,2x1)")
    bc.add_argument("--tasks", type=int, default=2, help="tasks started in each layout")
    bc.add_argument("--seconds", type=float, default=40.0, help="measuring window per layout")
    bc.add_argument("--environment", metavar="PATH", help="environment file or dataset folder (default: the demo)")
    bc.add_argument("--kill-after", type=float, help="then SIGKILL a task's worker after this many seconds")
    bc.add_argument("--out", metavar="FILE.json")
    bc.set_defaults(fn=cmd_bench_cluster)

    bw = bench.add_parser("websocket", help="loopback binary WebSocket throughput")
    bw.add_argument("--messages", type=int, default=20000)
    bw.add_argument("--size-kb", type=int, default=80)
    bw.add_argument("--out", metavar="FILE.json")
    bw.set_defaults(fn=cmd_bench_websocket)
    bj = bench.add_parser("jpeg", help="JPEG encoders on a demo frame at 640x480 and 1920x1080")
    bj.add_argument("--image", metavar="VIDEO_OR_IMAGE", help="default: the demo video")
    bj.add_argument("--repeats", type=int, default=30)
    bj.add_argument("--out", metavar="FILE.json")
    bj.set_defaults(fn=cmd_bench_jpeg)
    bd = bench.add_parser("detector", help="ms per image and images/s of every available detector")
    bd.add_argument("--detectors", default="nanodet,centernet,fasterrcnn", help="comma-separated")
    bd.add_argument("--batch", default="1,4", help="comma-separated batch sizes (cameras per call)")
    bd.add_argument("--resolution", default="1080p,576p", help="comma-separated: 1080p, 720p, 576p, 480p or WxH")
    bd.add_argument("--precision", default="", help="Faster R-CNN precisions, e.g. fp32,fp16 (default: all here)")
    bd.add_argument("--iterations", type=int, default=20, help="timed calls per case")
    bd.add_argument("--max-seconds", type=float, default=20.0, help="time budget per case (at least 3 calls)")
    bd.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    bd.set_defaults(fn=cmd_bench_detector)

    ev = sub.add_parser("eval-detector", help="person AP50, AP50:95 and recall of each detector on a dataset")
    ev.add_argument("dataset", metavar="DATASET_DIR", help="dataset folder (environment.json + videos + gt/)")
    ev.add_argument("--detectors", default="nanodet,centernet,fasterrcnn", help="comma-separated")
    ev.add_argument("--frame-step", type=int, default=1, help="score every N-th ground-truth frame")
    ev.add_argument("--out", metavar="FILE.json", help="write the report as JSON")
    ev.set_defaults(fn=cmd_eval_detector)

    keys = sub.add_parser("keys", help="API keys (stored hashed in a keys file)").add_subparsers(
        dest="keys", required=True
    )
    ka = keys.add_parser("add", help="create a key: prints it once, stores its SHA-256")
    ka.add_argument("--file", required=True, help="keys file (SPOTON_API_KEYS_FILE)")
    ka.add_argument("--name", required=True)
    ka.add_argument("--role", choices=["viewer", "operator", "admin"], required=True)
    ka.add_argument("--environment", action="append", default=[], help="limit the key to an environment (repeatable)")
    ka.set_defaults(fn=cmd_keys_add)

    te = sub.add_parser("eval", help="tracking and cross-camera identity scores (MOTA, IDF1, HOTA) on datasets")
    te.add_argument(
        "dataset", metavar="DATASET_DIR", nargs="+", help="dataset folders (environment.json + videos + gt/)"
    )
    te.add_argument("--out", metavar="FILE.json", help="write the report(s) as JSON (a list for several)")
    te.add_argument("--max-frames", type=int, help="process only the first N global frames (a quick look)")
    te.add_argument("--record", metavar="FILE", help="also save the identity layer's inputs (for --replay)")
    te.add_argument("--replay", metavar="FILE", help="re-run only the identity layer over a --record file")
    te.set_defaults(fn=cmd_eval)

    nv = sub.add_parser(
        "derive-narrow-views", help="a re-entry test set: each camera of a labelled dataset keeps part of its width"
    )
    nv.add_argument("source", metavar="DATASET_DIR")
    nv.add_argument("out", metavar="OUT_DIR")
    nv.add_argument("--keep", type=float, default=0.5, help="share of each image's width a camera keeps (0.5)")
    nv.add_argument("--force", action="store_true", help="replace OUT_DIR")
    nv.set_defaults(fn=cmd_derive_narrow_views)

    from app.stores.history.cli import add_db_parser

    add_db_parser(sub)

    args = p.parse_args(argv)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
