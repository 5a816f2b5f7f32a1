"""Helpers of the history tests: a fresh PostgreSQL database per test module, a TCP proxy that can cut
PostgreSQL off (the shared server itself is never stopped), and tracking results built from ground truth."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.services.frame_processor import CameraResult, FrameResult, TrackOut
from app.services.identity.events import IdentityEvent, IdentityEventKind
from tests.conftest import require_service, shared

PG_HOST, PG_PORT = "127.0.0.1", 5432
ADMIN_DSN = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


def pg_url(database: str, port: int = PG_PORT) -> str:
    return f"postgresql+asyncpg://postgres@{PG_HOST}:{port}/{database}"


@contextlib.contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new empty database ``spoton_test_<random>`` (name yielded), dropped afterwards."""
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    import asyncpg

    name = f"spoton_test_{uuid.uuid4().hex[:12]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield name
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of a server; ``cut()`` closes the listener and every connection
    (clients then get 'connection refused'), ``restore()`` listens again on the same port."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.connections = 0
        self._call(self._listen())

    def _call(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


# -- ground truth as pipeline output ----------------------------------------------------------------
GT_FPS = 7.0
CAMERAS = ("c1", "c2", "c3", "c4")


@dataclass
class GroundTruth:
    """multiview-dev: per-camera boxes (frame, id, x, y, w, h) and world positions, 1-based frames."""

    boxes: dict[str, np.ndarray]
    world: dict[tuple[int, int], tuple[float, float]]
    frames: int
    relabel: dict[tuple[str, int, int], int] = field(default_factory=dict)
    """(camera, frame, id) → the id the fixture records instead (ids later merged into ``id``)."""
    merges: list[tuple[int, int, int]] = field(default_factory=list)
    """(frame, surviving id, merged-away id)."""

    def t(self, frame: int, origin: float) -> float:
        return origin + (frame - 1) / GT_FPS


def load_ground_truth() -> GroundTruth:
    root = shared("multiview-dev", "gt")
    boxes = {c: np.loadtxt(root / f"gt_{c}.txt", delimiter=",", ndmin=2) for c in CAMERAS}
    w = np.loadtxt(root / "gt_world.txt", delimiter=",", ndmin=2)
    world = {(int(r[0]), int(r[1])): (float(r[2]), float(r[3])) for r in w}
    frames = int(max(b[:, 0].max() for b in boxes.values()))
    return GroundTruth(boxes, world, frames)


def with_merge_chain(gt: GroundTruth, person: int) -> GroundTruth:
    """The person's early sightings in c3 carry id ``1000+p`` and in c4 ``2000+p``; later ``2000+p`` merges
    into ``1000+p`` and that into ``p`` — a merge chain the analytics must resolve back to one person."""
    a, b = 1000 + person, 2000 + person
    c3 = sorted(int(f) for f, i in gt.boxes["c3"][:, :2] if int(i) == person)
    c4 = sorted(int(f) for f, i in gt.boxes["c4"][:, :2] if int(i) == person)
    merge_b = c4[len(c4) // 3]
    merge_a = c3[len(c3) // 2]
    relabel = {("c3", f, person): a for f in c3 if f < merge_a}
    relabel |= {("c4", f, person): b for f in c4 if f < merge_b}
    merges = [(merge_b, a, b), (merge_a, person, a)]
    return GroundTruth(gt.boxes, gt.world, gt.frames, relabel, merges)


def frame_results(gt: GroundTruth) -> Iterator[FrameResult]:
    """Each global frame as the pipeline would report it (track id = GT id), with identity events."""
    image = np.zeros((1, 1, 3), np.uint8)
    seen: set[int] = set()
    by_frame: dict[str, dict[int, list[np.ndarray]]] = {c: {} for c in CAMERAS}
    for c in CAMERAS:
        for row in gt.boxes[c]:
            by_frame[c].setdefault(int(row[0]), []).append(row)
    merges = {f: (keep, gone) for f, keep, gone in gt.merges}
    for f in range(1, gt.frames + 1):
        ts = (f - 1) / GT_FPS
        cams: list[CameraResult] = []
        events: list[IdentityEvent] = []
        for c in CAMERAS:
            tracks = []
            for row in by_frame[c].get(f, []):
                pid = int(row[1])
                gid = gt.relabel.get((c, f, pid), pid)
                x, y, w, h = (float(v) for v in row[2:6])
                tracks.append(TrackOut(pid, gid, (x, y, x + w, y + h), 1.0, gt.world[(f, pid)]))
                if gid not in seen:
                    seen.add(gid)
                    events.append(IdentityEvent(IdentityEventKind.CREATED, gid, ts, c, pid))
            cams.append(CameraResult(c, f - 1, ts, tracks, image))
        if f in merges:
            keep, gone = merges[f]
            events.append(IdentityEvent(IdentityEventKind.MERGED, keep, ts, merged_id=gone))
        yield FrameResult(f - 1, ts, cams, identity_events=events)
