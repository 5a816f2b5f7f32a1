"""One camera's sub-videos played back to back as one continuous stream.

Frame indices and timestamps run on across sub-video boundaries, so everything downstream — the camera's
tracker above all — sees one video: no gap, no reset. While one sub-video plays, the next ``prefetch``
are already being fetched; at a boundary the decoding thread waits only if the next one has not arrived.

The frame type is injected (``make_frame``) so this module does not depend on the reader that consumes it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

import cv2
import numpy as np

from app.models.base import ImageBGR
from app.services.environments import CameraSpec
from app.services.video_sources.base import Lease, SubVideo, VideoStore, VideoStoreError
from app.services.video_sources.integrity import early_end

log = logging.getLogger(__name__)

FrameT = TypeVar("FrameT")
WAIT_POLL_S = 0.2


def release_when_done(fut: Future[Lease]) -> None:
    """Give up on a fetch: cancel it, or release its lease once it lands (a shared download keeps going)."""

    def done(f: Future[Lease]) -> None:
        if not f.cancelled() and f.exception() is None:
            f.result().release()

    fut.cancel()
    fut.add_done_callback(done)


def probe(path: str) -> tuple[int, float]:
    """Frame count and fps from a video's header (0 when unknown)."""
    cap = cv2.VideoCapture(path)
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        cap.release()


class SegmentedVideoSource(Generic[FrameT]):
    def __init__(
        self,
        camera: CameraSpec,
        store: VideoStore,
        subs: list[SubVideo],
        first: Lease,
        make_frame: Callable[[str, int, float, ImageBGR], FrameT],
        *,
        prefetch: int = 1,
        frame_count: int = 0,
    ) -> None:
        if not subs:
            raise ValueError("no sub-videos")
        self.camera = camera
        self.frame_count = frame_count
        """Total frames: exact for local sub-videos, estimated from object sizes for remote ones."""
        self._store = store
        self._subs = subs
        self._make = make_frame
        self._prefetch_n = max(0, prefetch)
        self._lock = threading.Lock()
        self._closed = False
        self._pending: dict[int, Future[Lease]] = {}
        self._index = 0
        self._next = 0
        self._lease: Lease | None = None
        self._cap: cv2.VideoCapture | None = None
        self._sub_decoded = 0
        self._sub_header_frames = 0
        self._open(first, subs[0])
        assert self._cap is not None
        header_fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps: float = camera.fps if camera.fps > 0 else (header_fps if header_fps > 0 else 10.0)
        self._prefetch()

    @property
    def sub_video_index(self) -> int:
        """The sub-video playing now (0-based)."""
        return self._index

    def read(self) -> FrameT | None:
        while True:
            with self._lock:
                if self._closed:
                    return None
                if self._cap is not None:
                    ok, image = self._cap.read()
                    if ok and image is not None:
                        i = self._next
                        self._next += 1
                        self._sub_decoded += 1
                        return self._make(self.camera.id, i, i / self.fps, np.asarray(image, np.uint8))
                    ended = f"sub-video {self._subs[self._index].uri}"
                    problem = early_end(self.camera.id, ended, self._sub_decoded, self._sub_header_frames)
                    self._close_current()
                    if problem is not None:
                        raise VideoStoreError(problem)
                self._index += 1
                if self._index >= len(self._subs):
                    return None
                sub = self._subs[self._index]
                fut = self._pending.pop(self._index, None) or self._store.fetch(sub)
                self._prefetch()
            lease = self._wait(fut, sub)
            if lease is None:
                return None
            with self._lock:
                if self._closed:
                    lease.release()
                    return None
                self._open(lease, sub)

    def close(self) -> None:
        """Release everything; safe from any thread, and it interrupts a wait at a sub-video boundary."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_current()
            for fut in self._pending.values():
                release_when_done(fut)
            self._pending.clear()

    # -- internals ------------------------------------------------------------------------------
    def _prefetch(self) -> None:
        last = min(len(self._subs), self._index + 1 + self._prefetch_n)
        for j in range(self._index + 1, last):
            if j not in self._pending:
                self._pending[j] = self._store.fetch(self._subs[j])

    def _wait(self, fut: Future[Lease], sub: SubVideo) -> Lease | None:
        while True:
            if self._closed:
                release_when_done(fut)
                return None
            try:
                return fut.result(timeout=WAIT_POLL_S)
            except FutureTimeout:
                continue
            except CancelledError:
                return None
            except Exception as exc:
                self.close()
                raise VideoStoreError(f"camera '{self.camera.id}': sub-video {sub.uri}: {exc}") from exc

    def _open(self, lease: Lease, sub: SubVideo) -> None:
        cap = cv2.VideoCapture(str(lease.path))
        if not cap.isOpened():
            cap.release()
            lease.release()
            raise VideoStoreError(f"camera '{self.camera.id}': cannot decode sub-video {sub.uri}")
        self._cap, self._lease = cap, lease
        self._sub_decoded, self._sub_header_frames = 0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        log.debug("camera %s: playing sub-video %s from frame %d", self.camera.id, sub.name, self._next)

    def _close_current(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None
