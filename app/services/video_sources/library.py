"""Where every camera's sub-videos come from, for tasks and for the media endpoint.

Picks the store for a camera's location (a local folder, or an S3 prefix through the shared cache), keeps
remote listings, gets a task's first sub-videos local while reporting byte progress, and hands out known
sub-videos — by name, from the listing only — to the media endpoint. The S3 store, its I/O thread and the
cache are made on first use, so a server with only local videos runs none of them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from app.core.config import Settings
from app.services.environments import CameraSpec, S3Location
from app.services.video_cache import VideoCache
from app.services.video_sources.base import (
    DownloadProgress,
    Lease,
    SubVideo,
    VideoStore,
    VideoStoreError,
    is_sub_video_name,
)
from app.services.video_sources.io_loop import IoLoop
from app.services.video_sources.local import LocalFolderStore
from app.services.video_sources.s3 import S3Config, S3VideoStore
from app.services.video_sources.segmented import probe, release_when_done

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25


@dataclass(slots=True)
class PreparedCamera:
    """A camera ready to play: its sub-videos, the first one local and pinned, its total frames."""

    camera: CameraSpec
    store: VideoStore
    subs: list[SubVideo]
    first: Lease
    frame_count: int


class VideoLibrary:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.local = LocalFolderStore()
        self._s3: S3VideoStore | None = None
        self._listings: dict[str, list[SubVideo]] = {}
        self._lock = threading.Lock()

    # -- stores ---------------------------------------------------------------------------------
    def store_for(self, camera: CameraSpec) -> VideoStore:
        return self.s3 if isinstance(camera.video, S3Location) else self.local

    @property
    def s3(self) -> S3VideoStore:
        with self._lock:
            if self._s3 is None:
                s = self.settings
                cache = VideoCache(s.video_cache_dir or s.data_dir / "video-cache", int(s.video_cache_max_size))
                self._s3 = S3VideoStore(S3Config.from_settings(s), cache, IoLoop())
            return self._s3

    @property
    def cache(self) -> VideoCache | None:
        """The download cache, once a remote camera has been used."""
        return self._s3.cache if self._s3 is not None else None

    def close(self) -> None:
        with self._lock:
            s3, self._s3 = self._s3, None
        if s3 is not None:
            s3.close()

    # -- listing --------------------------------------------------------------------------------
    async def sub_videos(self, camera: CameraSpec, refresh: bool = False) -> list[SubVideo]:
        """The camera's sub-videos in order. Remote listings are kept until the next ``refresh``."""
        store = self.store_for(camera)
        key = f"{camera.id}\n{camera.video}"
        if store.remote and not refresh and key in self._listings:
            return self._listings[key]
        subs = await asyncio.wrap_future(store.list_sub_videos(camera))
        if store.remote:
            self._listings[key] = subs
        return subs

    # -- a task's cameras -----------------------------------------------------------------------
    async def prepare(
        self, cameras: list[CameraSpec], on_download: Callable[[DownloadProgress], None] | None = None
    ) -> list[PreparedCamera]:
        """List every camera and get its first sub-video local; ``on_download`` hears byte progress while
        remote ones arrive (not at all when everything is local or cached). Nothing stays pinned on failure
        or cancellation."""
        plans: list[tuple[CameraSpec, VideoStore, list[SubVideo], Future[Lease]]] = []
        try:
            for cam in cameras:
                store = self.store_for(cam)
                subs = await self.sub_videos(cam, refresh=True)
                plans.append((cam, store, subs, store.fetch(subs[0])))
            waiting = [asyncio.ensure_future(self._first(c, f)) for c, _, _, f in plans]
            if on_download is not None and any(st.remote and st.bytes_ready(s[0]) < s[0].size for _, st, s, _ in plans):
                while not all(w.done() for w in waiting):
                    on_download(self._progress(plans))
                    await asyncio.wait(waiting, timeout=PROGRESS_INTERVAL_S, return_when=asyncio.FIRST_EXCEPTION)
                    if any(w.done() and not w.cancelled() and w.exception() for w in waiting):
                        break
                on_download(self._progress(plans))
            firsts = await asyncio.gather(*waiting)
            counts = await asyncio.gather(
                *(
                    asyncio.to_thread(self._frame_count, st, subs, first)
                    for (_, st, subs, _), first in zip(plans, firsts, strict=True)
                )
            )
        except BaseException:
            for _, _, _, f in plans:
                release_when_done(f)
            raise
        return [
            PreparedCamera(cam, st, subs, first, n)
            for (cam, st, subs, _), first, n in zip(plans, firsts, counts, strict=True)
        ]

    @staticmethod
    async def _first(cam: CameraSpec, fut: Future[Lease]) -> Lease:
        try:
            return await asyncio.wrap_future(fut)
        except VideoStoreError as exc:
            raise VideoStoreError(f"camera '{cam.id}': {exc}") from exc

    @staticmethod
    def _progress(plans: list[tuple[CameraSpec, VideoStore, list[SubVideo], Future[Lease]]]) -> DownloadProgress:
        remote = [(st, subs[0], f) for _, st, subs, f in plans if st.remote]
        return DownloadProgress(
            done_bytes=sum(sub.size if f.done() else min(sub.size, st.bytes_ready(sub)) for st, sub, f in remote),
            total_bytes=sum(sub.size for _, sub, _ in remote),
            files_done=sum(1 for *_, f in remote if f.done()),
            files_total=len(remote),
        )

    @staticmethod
    def _frame_count(store: VideoStore, subs: list[SubVideo], first: Lease) -> int:
        """Exact (headers of every file) when local; for remote sub-videos, the first one's frame count
        scaled by total bytes / its bytes — an estimate used for progress only."""
        first_frames, _ = probe(str(first.path))
        if not store.remote:
            return first_frames + sum(probe(s.key)[0] for s in subs[1:])
        if first_frames <= 0 or subs[0].size <= 0:
            return 0
        return round(first_frames * sum(s.size for s in subs) / subs[0].size)

    # -- the media endpoint ---------------------------------------------------------------------
    async def acquire(self, camera: CameraSpec, name: str) -> Lease | None:
        """A pinned local file of the camera's sub-video ``name``, fetched if need be; None when ``name``
        is not one of its listed sub-videos or the file is not where it must be (a symlink, outside)."""
        if not is_sub_video_name(name):
            return None
        try:
            subs = await self.sub_videos(camera)
        except VideoStoreError:
            return None
        sub = next((s for s in subs if s.name == name), None)
        if sub is None:
            return None
        store = self.store_for(camera)
        lease = await asyncio.wrap_future(store.fetch(sub))
        if not self._contained(camera, store, lease.path):
            lease.release()
            log.warning("camera %s: sub-video %s resolves outside its store; refused", camera.id, name)
            return None
        return lease

    def _contained(self, camera: CameraSpec, store: VideoStore, path: Path) -> bool:
        if store.remote:
            cache = self.cache
            return (
                cache is not None
                and not path.is_symlink()
                and path.is_file()
                and path.resolve().parent == cache.directory.resolve()
            )
        assert isinstance(camera.video, Path)
        if camera.video.is_file():  # a single-file camera: exactly the file its environment names
            return path == camera.video
        return path.is_file() and path.resolve().parent == camera.video.resolve()
