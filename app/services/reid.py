"""Cross-camera identity: turns per-camera track ids into global ids.

A camera's tracker already keeps a person's track id stable inside that camera, so the registry only
decides *once per track* which global identity it belongs to, and keeps that answer (hysteresis: ids do
not flicker). The decision uses two cues:

* geometry — a person seen at the same moment in two overlapping cameras stands on one spot of the map, so
  a new track may join an identity that another camera sees right now only if their map positions agree
  within ``max_map_distance_m``; an identity last seen a while ago can only be as far as a walking person
  gets in that time;
* appearance — cosine similarity between the track's embedding and the identity's gallery, searched with
  FAISS over every gallery vector at once.

Pairs are assigned one-to-one per frame (Hungarian), so two tracks of one frame never take the same id.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import faiss
import numpy as np
from scipy.optimize import linear_sum_assignment

from app.models.base import FloatArray


@dataclass(slots=True)
class Observation:
    """One track of one camera in the current global frame."""

    camera_id: str
    track_id: int
    embedding: FloatArray | None
    map_xy: tuple[float, float] | None


@dataclass(slots=True)
class _Identity:
    global_id: int
    vector_ids: deque[int]
    last_seen_s: float
    # camera id → (time seen, map position or None)
    sightings: dict[str, tuple[float, tuple[float, float] | None]] = field(default_factory=dict)

    def latest_position(self) -> tuple[float, tuple[float, float]] | None:
        best: tuple[float, tuple[float, float]] | None = None
        for t, xy in self.sightings.values():
            if xy is not None and (best is None or t > best[0]):
                best = (t, xy)
        return best


@dataclass(slots=True, frozen=True)
class ReIdConfig:
    match_threshold: float = 0.6
    max_map_distance_m: float = 1.5
    co_visible_window_s: float = 0.5
    max_speed_mps: float = 3.0
    geometry_bonus: float = 0.3
    gallery_size: int = 20
    identity_ttl_s: float = 60.0
    gallery_every_n: int = 5


class IdentityRegistry:
    """Global identities of one processing task."""

    def __init__(self, dim: int, config: ReIdConfig | None = None) -> None:
        self.config = config or ReIdConfig()
        self._dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._vector_owner: dict[int, int] = {}
        self._next_vector = itertools.count(1)
        self._next_gid = itertools.count(1)
        self._identities: dict[int, _Identity] = {}
        self._track_gid: dict[tuple[str, int], int] = {}
        self._track_seen: dict[tuple[str, int], int] = {}
        self.total_identities = 0

    # -- public ---------------------------------------------------------------------------------
    def assign(self, observations: list[Observation], now_s: float) -> list[int]:
        """Global id for each observation (same order), updating galleries and sightings."""
        gids: list[int | None] = [self._track_gid.get((o.camera_id, o.track_id)) for o in observations]
        new_idx = [i for i, g in enumerate(gids) if g is None]
        if new_idx:
            taken = {(o.camera_id, g) for o, g in zip(observations, gids, strict=True) if g is not None}
            for i, gid in self._match_new(observations, new_idx, taken, now_s).items():
                gids[i] = gid
        out: list[int] = []
        for o, g in zip(observations, gids, strict=True):
            if g is None:
                g = self._create_identity(now_s)
            key = (o.camera_id, o.track_id)
            self._track_gid[key] = g
            self._observe(self._identities[g], o, now_s, key)
            out.append(g)
        self._prune(now_s)
        return out

    def forget_track(self, camera_id: str, track_id: int) -> None:
        self._track_gid.pop((camera_id, track_id), None)
        self._track_seen.pop((camera_id, track_id), None)

    @property
    def active_identities(self) -> int:
        return len(self._identities)

    # -- matching -------------------------------------------------------------------------------
    def _match_new(
        self,
        observations: list[Observation],
        new_idx: list[int],
        taken: set[tuple[str, int]],
        now_s: float,
    ) -> dict[int, int]:
        cand = list(self._identities.values())
        if not cand:
            return {}
        sims = self._appearance(observations, new_idx, cand)
        score = np.full((len(new_idx), len(cand)), -np.inf)
        cfg = self.config
        for r, i in enumerate(new_idx):
            o = observations[i]
            for c, ident in enumerate(cand):
                if (o.camera_id, ident.global_id) in taken:
                    continue  # this camera already shows that person in another track
                same_cam = ident.sightings.get(o.camera_id)
                if same_cam is not None and now_s - same_cam[0] <= cfg.co_visible_window_s:
                    continue  # seen in this camera right now under another track
                s = sims[r, c]
                bonus = 0.0
                pos = ident.latest_position()
                if o.map_xy is not None and pos is not None:
                    t_seen, xy = pos
                    d = math.dist(o.map_xy, xy)
                    dt = max(0.0, now_s - t_seen)
                    if dt <= cfg.co_visible_window_s:
                        if d > cfg.max_map_distance_m:
                            continue
                        bonus = cfg.geometry_bonus * (1.0 - d / cfg.max_map_distance_m)
                    elif d > cfg.max_map_distance_m + cfg.max_speed_mps * dt:
                        continue
                total = s + bonus
                if total >= cfg.match_threshold:
                    score[r, c] = total
        if not np.isfinite(score).any():
            return {}
        cost = np.where(np.isfinite(score), -score, 1e6)
        rows, cols = linear_sum_assignment(cost)
        result: dict[int, int] = {}
        for r, c in zip(rows, cols, strict=True):
            if np.isfinite(score[r, c]):
                result[new_idx[r]] = cand[c].global_id
        return result

    def _appearance(
        self, observations: list[Observation], new_idx: list[int], cand: list[_Identity]
    ) -> np.ndarray:
        """Best cosine similarity of each new observation to each candidate's gallery (0 if unknown)."""
        sims = np.zeros((len(new_idx), len(cand)), np.float64)
        if self._index.ntotal == 0:
            return sims
        col = {ident.global_id: c for c, ident in enumerate(cand)}
        rows = [r for r, i in enumerate(new_idx) if observations[i].embedding is not None]
        if not rows:
            return sims
        q = np.stack([observations[new_idx[r]].embedding for r in rows]).astype(np.float32)  # type: ignore[misc]
        k = min(self._index.ntotal, 64)
        d, ids = self._index.search(np.ascontiguousarray(q), k)
        for qi, r in enumerate(rows):
            for sim, vid in zip(d[qi], ids[qi], strict=True):
                if vid < 0:
                    continue
                c = col.get(self._vector_owner.get(int(vid), -1))
                if c is not None and sim > sims[r, c]:
                    sims[r, c] = float(sim)
        return sims

    # -- bookkeeping ----------------------------------------------------------------------------
    def _create_identity(self, now_s: float) -> int:
        gid = next(self._next_gid)
        self._identities[gid] = _Identity(gid, deque(), now_s)
        self.total_identities += 1
        return gid

    def _observe(self, ident: _Identity, o: Observation, now_s: float, key: tuple[str, int]) -> None:
        ident.last_seen_s = now_s
        ident.sightings[o.camera_id] = (now_s, o.map_xy)
        n = self._track_seen.get(key, 0)
        self._track_seen[key] = n + 1
        if o.embedding is not None and n % self.config.gallery_every_n == 0:
            vid = next(self._next_vector)
            self._index.add_with_ids(
                np.ascontiguousarray(o.embedding.reshape(1, -1).astype(np.float32)),
                np.array([vid], dtype=np.int64),
            )
            self._vector_owner[vid] = ident.global_id
            ident.vector_ids.append(vid)
            if len(ident.vector_ids) > self.config.gallery_size:
                self._remove_vectors([ident.vector_ids.popleft()])

    def _remove_vectors(self, vids: list[int]) -> None:
        if vids:
            self._index.remove_ids(np.array(vids, dtype=np.int64))  # type: ignore[arg-type]
            for v in vids:
                self._vector_owner.pop(v, None)

    def _prune(self, now_s: float) -> None:
        ttl = self.config.identity_ttl_s
        stale = [g for g, ident in self._identities.items() if now_s - ident.last_seen_s > ttl]
        for g in stale:
            self._remove_vectors(list(self._identities.pop(g).vector_ids))
        if stale:
            dead = set(stale)
            for key in [k for k, g in self._track_gid.items() if g in dead]:
                self.forget_track(*key)
