"""Video sources of a task and the global frame clock that keeps their cameras in step.

Each camera's video is decoded in a reader thread ahead of use, into a bounded queue, so decode overlaps
model work without ever building a backlog. Cameras are aligned by timestamp: global frame *g* happens at
``g / fps`` seconds (``fps`` = the fastest camera) and shows, for every camera, its latest frame at or
before that time — so cameras recorded at different rates stay in sync.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from app.core.config import Settings, get_settings
from app.models.base import ImageBGR
from app.services.environments import CameraSpec
from app.services.video_sources.base import DownloadProgress, VideoStoreError
from app.services.video_sources.integrity import early_end
from app.services.video_sources.library import PreparedCamera, VideoLibrary
from app.services.video_sources.segmented import SegmentedVideoSource

log = logging.getLogger(__name__)


class VideoSourceError(RuntimeError):
    """A camera's video cannot be opened or read."""


@dataclass(slots=True)
class CameraFrame:
    camera_id: str
    frame_index: int
    """0-based frame number in the camera's video."""
    timestamp_s: float
    """Position in the video, from the camera's fps."""
    image: ImageBGR
    decoded_at: float = field(default_factory=time.monotonic)
    """When the frame left the decoder (``time.monotonic()``): the start of its frame→send latency."""


@dataclass(slots=True)
class GlobalFrame:
    index: int
    timestamp_s: float
    frames: dict[str, CameraFrame]


class FrameSource(Protocol):
    """Frames of one camera, in order. Implementations: a local file; S3 sub-videos (cached)."""

    camera: CameraSpec
    fps: float
    frame_count: int
    """Total frames when known, else 0."""

    def read(self) -> CameraFrame | None: ...

    def close(self) -> None: ...


class LocalVideoSource:
    """Frames of one local video file. The environment's fps wins over the file header, which lies often
    (PETS2009's header says 10 fps for a 7 fps recording)."""

    def __init__(self, camera: CameraSpec) -> None:
        self.camera = camera
        path = camera.video
        if not isinstance(path, Path) or not path.is_file():
            raise VideoSourceError(f"camera '{camera.id}': video file not found: {path}")
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            raise VideoSourceError(f"camera '{camera.id}': cannot decode video {path}")
        header_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = camera.fps if camera.fps > 0 else (header_fps if header_fps > 0 else 10.0)
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self._next = 0

    def read(self) -> CameraFrame | None:
        ok, image = self._cap.read()
        if not ok or image is None:
            problem = early_end(self.camera.id, str(self.camera.video), self._next, self.frame_count)
            if problem is not None:
                raise VideoSourceError(problem)
            return None
        frame = CameraFrame(self.camera.id, self._next, self._next / self.fps, np.asarray(image, np.uint8))
        self._next += 1
        return frame

    def close(self) -> None:
        self._cap.release()


class VideoDataManagerService:
    """Opens the video sources of a task's cameras: a local file, or sub-videos played back to back from a
    local folder or an S3 prefix (downloaded through the shared cache; see ``app/services/video_sources``).

    One per server, so that every task shares one cache and one download per object."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.library = VideoLibrary(self.settings)

    def open(self, cameras: list[CameraSpec]) -> list[FrameSource]:
        """Blocking :meth:`open_async`, for a thread with no event loop running."""
        return asyncio.run(self.open_async(cameras))

    async def open_async(
        self, cameras: list[CameraSpec], on_download: Callable[[DownloadProgress], None] | None = None
    ) -> list[FrameSource]:
        """One source per camera, in order; remote cameras are ready once their first sub-video is local,
        and ``on_download`` hears the bytes arriving meanwhile."""
        segmented = [c for c in cameras if not (isinstance(c.video, Path) and not c.video.is_dir())]
        try:
            prepared = {p.camera.id: p for p in await self.library.prepare(segmented, on_download)}
        except VideoStoreError as exc:
            raise VideoSourceError(str(exc)) from exc
        sources: list[FrameSource] = []
        try:
            for cam in cameras:
                p = prepared.pop(cam.id, None)
                if p is None:
                    sources.append(await asyncio.to_thread(LocalVideoSource, cam))
                else:
                    sources.append(await asyncio.to_thread(self._segmented, p))
        except BaseException as exc:
            for s in sources:
                s.close()
            for p in prepared.values():
                p.first.release()
            if isinstance(exc, VideoStoreError):
                raise VideoSourceError(str(exc)) from exc
            raise
        return sources

    def _segmented(self, p: PreparedCamera) -> FrameSource:
        return SegmentedVideoSource(
            p.camera,
            p.store,
            p.subs,
            p.first,
            CameraFrame,
            prefetch=self.settings.video_prefetch,
            frame_count=p.frame_count,
        )

    def close(self) -> None:
        """Stop downloads and the S3 client (at server shutdown)."""
        self.library.close()


_END = object()


class _Prefetcher:
    """Decodes one camera in its own thread, a couple of frames ahead (decoders release the GIL, so cameras
    decode in parallel)."""

    def __init__(self, source: FrameSource, stop: threading.Event, depth: int = 2) -> None:
        self.source = source
        self._stop = stop
        self._queue: queue.Queue[CameraFrame | BaseException | None] = queue.Queue(maxsize=max(1, depth))
        self._thread = threading.Thread(target=self._run, name=f"decode-{source.camera.id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        item: CameraFrame | BaseException | None
        while not self._stop.is_set():
            try:
                item = self.source.read()
            except BaseException as exc:  # handed to the reader thread, which reports it
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item is None or isinstance(item, BaseException):
                return

    def read(self) -> CameraFrame | None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return None
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def join(self) -> None:
        self._thread.join(timeout=5)


class SynchronizedReader:
    """Decodes all cameras of a task ahead of use and yields aligned global frames.

    Each camera decodes in its own thread (``_Prefetcher``); one thread aligns them by timestamp into global
    frames. Every queue on the way is bounded (``read_ahead`` global frames): when the consumer is slow, the
    decoders wait instead of piling up frames.
    """

    def __init__(self, sources: list[FrameSource], read_ahead: int = 4, start_frame: int = 0) -> None:
        if not sources:
            raise ValueError("no cameras to read")
        self._sources = sources
        self.fps = max(s.fps for s in sources)
        self.total_frames = max(
            (int(s.frame_count * self.fps / s.fps) for s in sources if s.frame_count > 0), default=0
        )
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, read_ahead))
        self.start_frame = max(0, start_frame)
        """Global frames before this one are decoded (to stay aligned) but not yielded: a resumed task."""
        self._stop = threading.Event()
        self._stop_decoders = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="video-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        decoders: list[_Prefetcher] = []
        try:
            decoders = [_Prefetcher(s, self._stop_decoders) for s in self._sources]
            pending: dict[str, CameraFrame | None] = {d.source.camera.id: d.read() for d in decoders}
            half = 0.5 / self.fps
            g = 0
            while not self._stop.is_set():
                t = g / self.fps
                frames: dict[str, CameraFrame] = {}
                for d in decoders:
                    cid = d.source.camera.id
                    nxt = pending[cid]
                    while nxt is not None and nxt.timestamp_s <= t + half:
                        frames[cid] = nxt
                        nxt = d.read()
                    pending[cid] = nxt
                if frames and g < self.start_frame:
                    pass
                elif frames:
                    if not self._put(GlobalFrame(g, t, frames)):
                        return
                elif all(p is None for p in pending.values()):
                    break
                g += 1
        except BaseException as exc:  # surfaced to the consumer, never lost in the thread
            self._error = exc
        finally:
            self._stop_decoders.set()
            for d in decoders:
                d.join()
            for s in self._sources:
                s.close()
            self._put(_END)

    def get(self, timeout: float | None = None) -> GlobalFrame | None:
        """Next global frame, or None at the end of the videos. Raises on a decode error."""
        item = self._queue.get(timeout=timeout)
        if item is _END:
            if self._error is not None:
                raise VideoSourceError(f"video decoding failed: {self._error}") from self._error
            self._queue.put(_END)  # stay at the end for later calls
            return None
        assert isinstance(item, GlobalFrame)
        return item

    def close(self) -> None:
        self._stop.set()
        self._stop_decoders.set()
        self._thread.join(timeout=5)
