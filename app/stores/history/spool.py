"""Local disk spool: batches the database could not take, kept until they are written (in order).

Layout: ``<spool>/<owner>/<seq:016d>-<events>.jsonl``, one JSON record per line, one file per batch.
A file is written to a temporary name, fsync'd, renamed and its directory fsync'd, so a crash leaves either
the whole batch or nothing. Each server process owns one directory, held by an ``flock`` on its ``.lock``
for the life of the process; at start-up a process adopts the directories whose owner has died (their lock
is free), so what a crashed server spooled is replayed by the next one. Blocking file I/O: call from a
worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from app.stores.history.records import Record, record_from_json, record_to_json

log = logging.getLogger(__name__)
_SUFFIX = ".jsonl"


@dataclass(slots=True, frozen=True)
class SpoolFile:
    path: Path
    seq: int
    events: int


def _parse(path: Path) -> SpoolFile | None:
    if path.suffix != _SUFFIX:
        return None
    seq, _, events = path.stem.partition("-")
    if not (seq.isdigit() and events.isdigit()):
        return None
    return SpoolFile(path, int(seq), int(events))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DiskSpool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.rejected_dir = root / "rejected"
        self._lock: IO[str] | None = None
        self.next_seq = 1

    def open(self) -> None:
        """Create and lock this process's directory; adopt orphaned ones (their files first, in order)."""
        # Locked under a hidden name first, so a server starting at the same moment cannot adopt it.
        hidden = self.root / f".{self.dir.name}"
        hidden.mkdir(parents=True, exist_ok=False)
        self._lock = (hidden / ".lock").open("w")
        fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        hidden.rename(self.dir)
        others = (p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for other in sorted(p for p in others if p not in (self.dir, self.rejected_dir)):
            self._adopt(other)

    def _adopt(self, other: Path) -> None:
        lock_path = other / ".lock"
        try:
            fh = lock_path.open("a")
        except OSError:
            return
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # its server is alive
            files = sorted((f for f in map(_parse, other.iterdir()) if f is not None), key=lambda f: f.seq)
            for f in files:
                f.path.rename(self.dir / f"{self.next_seq:016d}-{f.events}{_SUFFIX}")
                self.next_seq += 1
            if files:
                _fsync_dir(self.dir)
                log.warning("history spool: adopted %d batch(es) left by %s", len(files), other.name)
            shutil.rmtree(other, ignore_errors=True)
        finally:
            fh.close()

    def close(self) -> None:
        """Release the directory (removed when empty; kept, for the next start, when batches remain)."""
        if self._lock is None:
            return
        if not self.pending():
            shutil.rmtree(self.dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._lock.close()
        self._lock = None

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def write(self, seq: int, records: Sequence[Record]) -> SpoolFile:
        final = self.dir / f"{seq:016d}-{len(records)}{_SUFFIX}"
        tmp = self.dir / f".{final.name}.tmp"
        with tmp.open("w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps(record_to_json(r), separators=(",", ":")))
                fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.rename(final)
        _fsync_dir(self.dir)
        return SpoolFile(final, seq, len(records))

    def pending(self) -> list[SpoolFile]:
        """This process's spooled batches, oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted((f for f in map(_parse, self.dir.iterdir()) if f is not None), key=lambda f: f.seq)

    def read(self, f: SpoolFile) -> list[Record]:
        with f.path.open(encoding="utf-8") as fh:
            return [record_from_json(json.loads(line)) for line in fh if line.strip()]

    def remove(self, f: SpoolFile) -> None:
        f.path.unlink(missing_ok=True)

    def reject(self, f: SpoolFile) -> Path:
        """Set aside a batch the database refuses (not an outage): kept for inspection, never retried."""
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        target = self.rejected_dir / f"{self.dir.name}-{f.path.name}"
        f.path.rename(target)
        return target
