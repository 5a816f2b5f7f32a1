"""Video sources of a task and the global frame clock that keeps their cameras in step.

Each camera's video is decoded in a reader thread ahead of use, into a bounded queue, so decode overlaps
model work without ever building a backlog. Cameras are aligned by timestamp: global frame *g* happens at
``g / fps`` seconds (``fps`` = the fastest camera) and shows, for every camera, its latest frame at or
before that time — so cameras recorded at different rates stay in sync.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from app.models.base import ImageBGR
from app.services.environments import CameraSpec

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
        path = Path(camera.video)
        if not path.is_file():
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
            return None
        frame = CameraFrame(self.camera.id, self._next, self._next / self.fps, np.asarray(image, np.uint8))
        self._next += 1
        return frame

    def close(self) -> None:
        self._cap.release()


class VideoDataManagerService:
    """Opens the video sources of a task's cameras (local files; more sources plug in here)."""

    def open(self, cameras: list[CameraSpec]) -> list[FrameSource]:
        sources: list[FrameSource] = []
        try:
            for cam in cameras:
                sources.append(LocalVideoSource(cam))
        except Exception:
            for s in sources:
                s.close()
            raise
        return sources


_END = object()


class SynchronizedReader:
    """Decodes all cameras of a task in a background thread and yields aligned global frames.

    The queue between the thread and the consumer is bounded (``read_ahead``): when the consumer is slow,
    the reader waits instead of piling up decoded frames.
    """

    def __init__(self, sources: list[FrameSource], read_ahead: int = 4) -> None:
        if not sources:
            raise ValueError("no cameras to read")
        self._sources = sources
        self.fps = max(s.fps for s in sources)
        self.total_frames = max(
            (int(s.frame_count * self.fps / s.fps) for s in sources if s.frame_count > 0), default=0
        )
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max(1, read_ahead))
        self._stop = threading.Event()
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
        try:
            pending: dict[str, CameraFrame | None] = {s.camera.id: s.read() for s in self._sources}
            half = 0.5 / self.fps
            g = 0
            while not self._stop.is_set():
                t = g / self.fps
                frames: dict[str, CameraFrame] = {}
                for s in self._sources:
                    cid = s.camera.id
                    nxt = pending[cid]
                    while nxt is not None and nxt.timestamp_s <= t + half:
                        frames[cid] = nxt
                        nxt = s.read()
                    pending[cid] = nxt
                if frames:
                    if not self._put(GlobalFrame(g, t, frames)):
                        return
                elif all(p is None for p in pending.values()):
                    break
                g += 1
        except BaseException as exc:  # surfaced to the consumer, never lost in the thread
            self._error = exc
        finally:
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
        self._thread.join(timeout=5)
