"""History benchmark (prints figures): recorder cost on the event loop, write throughput, analytics latency.

    python -m app.stores.history.bench [--database-url URL] [--minutes 10] [--people 20]

Synthetic data: ``--people`` people walking on a 30 × 20 m floor for ``--minutes`` of 7 fps video, seen by
four cameras that each cover an overlapping half of it. Default database: a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from app.core.config import Settings
from app.services.frame_processor import CameraResult, FrameResult, TrackOut
from app.services.processing_task import TaskState, TaskStatus
from app.stores.history.analytics import HistoryFilter
from app.stores.history.recorder import HistoryRecorder, RecorderConfig
from app.stores.history.repository import build_history_repository
from app.stores.history.spool import DiskSpool

FPS = 7.0
CAMERAS = {"c1": (0, 0, 18, 12), "c2": (12, 0, 30, 12), "c3": (0, 8, 18, 20), "c4": (12, 8, 30, 20)}
IMAGE = np.zeros((1, 1, 3), np.uint8)


def synthetic_frames(minutes: float, people: int, seed: int = 0) -> list[FrameResult]:
    rng = random.Random(seed)
    pos = [[rng.uniform(0, 30), rng.uniform(0, 20)] for _ in range(people)]
    heading = [rng.uniform(0, 2 * math.pi) for _ in range(people)]
    out = []
    for f in range(int(minutes * 60 * FPS)):
        cams = []
        for c, (x0, y0, x1, y1) in CAMERAS.items():
            tracks = [
                TrackOut(p, p + 1, (0.0, 0.0, 10.0, 30.0), 0.9, (x, y))
                for p, (x, y) in enumerate(pos)
                if x0 <= x < x1 and y0 <= y < y1
            ]
            cams.append(CameraResult(c, f, f / FPS, tracks, IMAGE))
        out.append(FrameResult(f, f / FPS, cams))
        for p in range(people):
            heading[p] += rng.gauss(0, 0.3)
            pos[p][0] = min(29.9, max(0.0, pos[p][0] + math.cos(heading[p]) * 1.2 / FPS))
            pos[p][1] = min(19.9, max(0.0, pos[p][1] + math.sin(heading[p]) * 1.2 / FPS))
    return out


async def run(url: str, minutes: float, people: int, spool: Path) -> None:
    frames = synthetic_frames(minutes, people)
    n_events = sum(len(c.tracks) for fr in frames for c in fr.cameras)
    repo = build_history_repository(Settings(database_url=url))
    print(f"database {repo.display_url}; {len(frames)} frames, {n_events} tracking events")
    print(await repo.prepare())  # fails here, clearly, when the database cannot be reached
    recorder = HistoryRecorder(repo, DiskSpool(spool), RecorderConfig(buffer_size=max(20_000, n_events + 10)))
    await recorder.start()
    task = TaskState("bench", "bench-env", list(CAMERAS), status=TaskStatus.PROCESSING)
    history = recorder.open_task(task)
    history.started(task, FPS)
    per_frame: list[float] = []
    t_all = time.perf_counter()
    for fr in frames:
        t0 = time.perf_counter()
        history.frame(fr)
        per_frame.append((time.perf_counter() - t0) * 1e6)
    while recorder.buffered or recorder.spool_pending:
        await asyncio.sleep(0.05)
    await recorder.stop()
    wall = time.perf_counter() - t_all
    print(
        f"record_frame on the event loop: median {statistics.median(per_frame):.0f} µs, "
        f"p99 {np.percentile(per_frame, 99):.0f} µs per frame ({n_events / len(frames):.1f} tracks)"
    )
    written = recorder.counters.written
    print(f"written {written} records in {wall:.2f} s: {written / wall:.0f} records/s (batches of 500, one writer)")

    repo = build_history_repository(Settings(database_url=url))
    a, f = repo.analytics, HistoryFilter(environment_id="bench-env")
    queries = {
        "occupancy/camera 60 s": lambda: a.occupancy(f, 60.0, True),
        "occupancy/environment 10 s": lambda: a.occupancy(f, 10.0, False),
        "unique_people": lambda: a.unique_people(f),
        "dwell/people": lambda: a.dwell_people(f),
        "dwell/cameras": lambda: a.dwell_cameras(f),
        "trajectory 1 s": lambda: a.trajectory(HistoryFilter(task_id="bench"), 1, 1.0),
        "heatmap 1 m": lambda: a.heatmap(f, 1.0),
        "transitions": lambda: a.transitions(f, 2.0),
    }
    for name, q in queries.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            await q()
            times.append((time.perf_counter() - t0) * 1000)
        print(f"  {name:28s} {min(times):8.1f} ms (best of 3)")
    await repo.dispose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", help="default: a temporary SQLite file (use an empty database)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--people", type=int, default=20)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        asyncio.run(run(url, args.minutes, args.people, Path(tmp) / "spool"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
