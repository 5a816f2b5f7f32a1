"""What every video store shares: a camera's sub-videos, pinned local copies of them, and the store protocol.

A camera's video is a sequence of *sub-videos* (``sub_video_01.mp4``, ``sub_video_02.mp4``, …) played back
to back. Where they live — a local folder or an S3 prefix — is the store's business; the player only asks a
store for the list and for a local file (a :class:`Lease`) of each one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from app.services.environments import CameraSpec

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm")
"""File name endings taken as sub-videos; anything else under a camera's folder or prefix is ignored."""

T = TypeVar("T")

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""Sub-video names the product accepts: one path component, no separators, no leading dot."""


class VideoStoreError(RuntimeError):
    """A sub-video cannot be listed or fetched; the message names it and says why."""


@dataclass(slots=True, frozen=True)
class SubVideo:
    """One sub-video of a camera, as its store lists it."""

    name: str
    """File name, unique within the camera: what the media endpoint accepts."""
    uri: str
    """``s3://bucket/key`` or the absolute local path: for messages and logs."""
    key: str
    """Where the store finds it: the object key (S3) or the local path."""
    size: int
    etag: str | None = None
    """The store's entity tag (S3), checked on download; None for local files."""
    bucket: str | None = None


def natural_key(name: str) -> tuple[tuple[int, object], ...]:
    """Sort key where ``sub_video_2`` comes before ``sub_video_10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in re.split(r"(\d+)", name) if p)


def is_sub_video_name(name: str) -> bool:
    return SAFE_NAME.fullmatch(name) is not None and name.lower().endswith(VIDEO_SUFFIXES)


class Lease:
    """A local file of a sub-video, pinned: the cache does not evict it until :meth:`release`.

    Release is idempotent and may be called from any thread.
    """

    def __init__(self, path: Path, on_release: Callable[[], None] | None = None) -> None:
        self.path = path
        self._on_release = on_release
        self._lock = threading.Lock()
        self._released = False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        if self._on_release is not None:
            self._on_release()

    @property
    def released(self) -> bool:
        return self._released

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(slots=True, frozen=True)
class DownloadProgress:
    """Bytes of the sub-videos a task waits for before it can start, and how many of them are here."""

    done_bytes: int
    total_bytes: int
    files_done: int
    files_total: int

    @property
    def fraction(self) -> float:
        if self.total_bytes <= 0:
            return 1.0 if self.files_done >= self.files_total else 0.0
        return min(1.0, self.done_bytes / self.total_bytes)


class VideoStore(Protocol):
    """Where a camera's sub-videos live. Implementations: :class:`LocalFolderStore`, :class:`S3VideoStore`.

    Calls return futures so that one store serves both the event loop (``asyncio.wrap_future``) and the
    decoding thread (``Future.result``).
    """

    remote: bool
    """Fetching downloads (the task shows DOWNLOADING while its first sub-videos arrive)."""

    def list_sub_videos(self, camera: CameraSpec) -> Future[list[SubVideo]]:
        """The camera's sub-videos in playback order; fails when there are none."""
        ...

    def fetch(self, sub: SubVideo) -> Future[Lease]:
        """A pinned local file holding the whole sub-video."""
        ...

    def bytes_ready(self, sub: SubVideo) -> int:
        """How much of the sub-video is local now (for progress)."""
        ...

    def close(self) -> None: ...


def done_future(value: T) -> Future[T]:
    f: Future[T] = Future()
    f.set_result(value)
    return f


def failed_future(exc: BaseException) -> Future[T]:
    f: Future[T] = Future()
    f.set_exception(exc)
    return f
