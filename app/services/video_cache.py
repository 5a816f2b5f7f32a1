"""A bounded local cache of downloaded sub-videos.

- **Atomic**: a download is written to ``NAME.part`` and renamed to ``NAME`` only once the filler has
  verified it (size, checksum); a reader never sees a half file under a final name.
- **One download per object**: concurrent requests for a name share one in-flight download.
- **Bounded, least-recently-used**: before a download starts, unpinned files are evicted oldest-use-first
  until the new file fits. A file leased to a player or the media endpoint is *never* evicted; when leases
  alone exceed the bound the cache goes over it (logged) rather than breaking playback, and shrinks back
  as leases are released. A single file larger than the bound is refused with a clear error.
- **Survives restarts**: complete files found in the directory at start are indexed (last use = mtime);
  leftover ``.part`` files of a crashed run are removed. One server process per cache directory.

Names are chosen by the store (a hash), never taken from a request; all async methods run on one event
loop, while :meth:`lookup` and lease release may be called from any thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.services.video_sources.base import Lease, VideoStoreError

log = logging.getLogger(__name__)

CACHE_NAME = re.compile(r"[0-9a-f]{40}(\.[a-z0-9]{1,8})?")
"""Names the cache gives its files (see :meth:`VideoCache.name_for` callers): a hex digest and a suffix."""


class CacheTooSmallError(VideoStoreError):
    """The cache bound cannot hold what is needed."""


@dataclass(slots=True)
class _Flight:
    """One download in progress and how many callers wait for it."""

    task: asyncio.Task[None] = field(init=False)
    waiters: int = 0


@dataclass(slots=True)
class _Entry:
    size: int
    last_used: float
    pins: int = 0


class VideoCache:
    def __init__(self, directory: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("video cache size must be > 0")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._reserved: dict[str, int] = {}
        self._inflight: dict[str, _Flight] = {}
        self._over_logged = False
        self._scan()

    # -- index ----------------------------------------------------------------------------------
    def _scan(self) -> None:
        for p in self.directory.iterdir():
            if p.name.endswith(".part"):
                p.unlink(missing_ok=True)
            elif CACHE_NAME.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                st = p.stat()
                self._entries[p.name] = _Entry(st.st_size, st.st_mtime)
        with self._lock:
            self._evict_locked()
        if self._entries:
            log.info("video cache %s: %d files, %d bytes", self.directory, len(self._entries), self.used_bytes)

    @property
    def used_bytes(self) -> int:
        """Bytes of complete files plus those reserved by downloads in flight."""
        return sum(e.size for e in self._entries.values()) + sum(self._reserved.values())

    def path(self, name: str) -> Path:
        if not CACHE_NAME.fullmatch(name):
            raise ValueError(f"not a cache file name: {name!r}")
        return self.directory / name

    def contains(self, name: str) -> bool:
        with self._lock:
            return name in self._entries

    def pins(self, name: str) -> int:
        with self._lock:
            e = self._entries.get(name)
            return e.pins if e else 0

    def names(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def lookup(self, name: str) -> Lease | None:
        """A lease on a complete cached file, or None when it is not here."""
        with self._lock:
            e = self._entries.get(name)
            if e is None:
                return None
            e.pins += 1
            e.last_used = time.time()
        return Lease(self.path(name), lambda: self._release(name))

    def _release(self, name: str) -> None:
        with self._lock:
            e = self._entries.get(name)
            if e is not None:
                e.pins = max(0, e.pins - 1)
                e.last_used = time.time()
            self._evict_locked()

    def _evict_locked(self) -> None:
        while self.used_bytes > self.max_bytes:
            idle = [(e.last_used, n) for n, e in self._entries.items() if e.pins == 0]
            if not idle:
                if not self._over_logged:
                    log.warning(
                        "video cache over its bound (%d > %d bytes): every cached file is in use",
                        self.used_bytes,
                        self.max_bytes,
                    )
                    self._over_logged = True
                return
            _, victim = min(idle)
            del self._entries[victim]
            (self.directory / victim).unlink(missing_ok=True)
            log.info("video cache: evicted %s", victim)
        self._over_logged = False

    # -- fetching -------------------------------------------------------------------------------
    async def get(self, name: str, size: int, fill: Callable[[Path], Awaitable[None]], label: str = "") -> Lease:
        """A lease on ``name``, downloading it with ``fill`` first unless cached or already on its way.

        ``fill(part)`` must leave the complete, verified object in ``part``; it may resume from what ``part``
        already holds. Awaiting callers may be cancelled without cancelling a download others share.
        """
        what = label or name
        if size > self.max_bytes:
            raise CacheTooSmallError(
                f"{what} ({size} bytes) is larger than the whole video cache ({self.max_bytes} bytes); "
                "raise SPOTON_VIDEO_CACHE_MAX_SIZE"
            )
        lease = self.lookup(name)
        if lease is not None:
            return lease
        flight = self._inflight.get(name)
        if flight is None:
            flight = _Flight()
            flight.task = asyncio.ensure_future(self._download(name, size, fill, what, flight))
            self._inflight[name] = flight
            flight.task.add_done_callback(functools.partial(self._landed, name))
        flight.waiters += 1
        try:
            await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            t = flight.task
            if t.done() and not t.cancelled() and t.exception() is None:
                self._release(name)  # the pin the download committed for this caller
            else:
                flight.waiters -= 1
            raise
        return Lease(self.path(name), lambda: self._release(name))

    def _landed(self, name: str, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(name, None)

    def downloading(self, name: str) -> bool:
        return name in self._inflight

    async def _download(
        self, name: str, size: int, fill: Callable[[Path], Awaitable[None]], what: str, flight: _Flight
    ) -> None:
        part = self.directory / f"{self.path(name).name}.part"
        with self._lock:
            self._reserved[name] = size
            self._evict_locked()
        ok = False
        try:
            await fill(part)
            got = part.stat().st_size
            if got != size:
                raise VideoStoreError(f"{what}: downloaded {got} bytes, expected {size}")
            os.replace(part, self.path(name))
            with self._lock:
                # committed pinned once per waiting caller, so it cannot be evicted before they hold it
                self._entries[name] = _Entry(size, time.time(), pins=flight.waiters)
            ok = True
        finally:
            if not ok:
                part.unlink(missing_ok=True)
            with self._lock:
                self._reserved.pop(name, None)
                self._evict_locked()
