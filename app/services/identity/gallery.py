"""Appearance galleries of global identities, searched with FAISS.

Each identity keeps a bounded set of L2-normalised embeddings. When a gallery is full, the oldest of its
lower-quality half makes room: good views (confident, unoccluded, large crops) stay longer, while the set
still follows a person whose look changes as they turn. An identity's similarity to a query is the mean of
its best `top_m` cosine similarities: a single lucky vector of a weak embedder must not decide a match.

All vectors of all identities sit in one inner-product index (exact search; on a GPU index when CUDA and a
GPU build of FAISS are present), rebuilt lazily after changes — galleries are small (identities × size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import faiss
import numpy as np
import numpy.typing as npt

from app.models.base import FloatArray

log = logging.getLogger(__name__)


class AppearanceGallery(Protocol):
    """Appearance memory of global identities."""

    def add(self, global_id: int, vector: FloatArray, quality: float, t: float) -> None: ...

    def similarity(self, queries: FloatArray, global_ids: list[int]) -> npt.NDArray[np.float64]:
        """len(queries) × len(global_ids) similarity; 0 where an identity has no vectors."""
        ...

    def merge(self, source: int, target: int) -> None:
        """Move `source`'s vectors into `target` (two ids were one person)."""
        ...

    def remove(self, global_id: int) -> None: ...

    def __len__(self) -> int: ...


@dataclass(slots=True)
class _Entry:
    vector: FloatArray
    quality: float
    t: float


@dataclass(slots=True)
class _Gallery:
    entries: list[_Entry] = field(default_factory=list)

    def add(self, entry: _Entry, size: int) -> None:
        self.entries.append(entry)
        while len(self.entries) > size:
            median = float(np.median([e.quality for e in self.entries]))
            low = [i for i, e in enumerate(self.entries) if e.quality <= median]
            victim = min(low, key=lambda i: self.entries[i].t)
            self.entries.pop(victim)


def _make_index(dim: int) -> faiss.Index:
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        try:
            return faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), dim)
        except Exception as exc:  # a GPU build without a usable device falls back to the CPU
            log.warning("FAISS GPU index unavailable (%s); using the CPU", exc)
    return faiss.IndexFlatIP(dim)


class FaissGallery:
    """`AppearanceGallery` over one exact FAISS inner-product index."""

    def __init__(self, dim: int, size: int = 20, top_m: int = 3, max_neighbours: int = 1024) -> None:
        if dim < 1 or size < 1 or top_m < 1:
            raise ValueError(f"dim, size and top_m must be >= 1 (got {dim}, {size}, {top_m})")
        self.dim = dim
        self.size = size
        self.top_m = top_m
        self.max_neighbours = max_neighbours
        self._galleries: dict[int, _Gallery] = {}
        self._index = _make_index(dim)
        self._owners = np.zeros(0, np.int64)
        self._dirty = False

    def __len__(self) -> int:
        return sum(len(g.entries) for g in self._galleries.values())

    def add(self, global_id: int, vector: FloatArray, quality: float, t: float) -> None:
        v = np.asarray(vector, np.float32).reshape(-1)
        if v.shape[0] != self.dim:
            raise ValueError(f"embedding has {v.shape[0]} values, the gallery expects {self.dim}")
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm) or norm == 0.0:
            return
        self._galleries.setdefault(global_id, _Gallery()).add(_Entry(v / norm, quality, t), self.size)
        self._dirty = True

    def merge(self, source: int, target: int) -> None:
        src = self._galleries.pop(source, None)
        if src is None:
            return
        dst = self._galleries.setdefault(target, _Gallery())
        for e in sorted(src.entries, key=lambda e: e.t):
            dst.add(e, self.size)
        self._dirty = True

    def remove(self, global_id: int) -> None:
        if self._galleries.pop(global_id, None) is not None:
            self._dirty = True

    def _rebuild(self) -> None:
        self._index.reset()
        owners: list[int] = []
        vecs: list[FloatArray] = []
        for gid, g in self._galleries.items():
            for e in g.entries:
                owners.append(gid)
                vecs.append(e.vector)
        if vecs:
            self._index.add(np.ascontiguousarray(np.stack(vecs), np.float32))
        self._owners = np.asarray(owners, np.int64)
        self._dirty = False

    def similarity(self, queries: FloatArray, global_ids: list[int]) -> npt.NDArray[np.float64]:
        q = np.ascontiguousarray(np.asarray(queries, np.float32).reshape(-1, self.dim))
        out = np.zeros((q.shape[0], len(global_ids)), np.float64)
        if self._dirty:
            self._rebuild()
        if self._index.ntotal == 0 or not len(q) or not global_ids:
            return out
        k = min(int(self._index.ntotal), self.max_neighbours)
        sims, rows = self._index.search(q, k)
        col = {gid: c for c, gid in enumerate(global_ids)}
        for qi in range(q.shape[0]):
            per_id: dict[int, list[float]] = {}
            for s, r in zip(sims[qi], rows[qi], strict=True):
                if r < 0:
                    continue
                gid = int(self._owners[r])
                if gid in col:
                    per_id.setdefault(gid, []).append(float(s))  # results come best first
            for gid, vals in per_id.items():
                out[qi, col[gid]] = float(np.mean(vals[: self.top_m]))
        return out
