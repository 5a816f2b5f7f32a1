"""What the cameras see in one global frame, and who of it stands together.

An `Observation` is one track of one camera now; a `Group` the observations of one person now (at most one per
camera, standing on one spot), made by `group_by_place`. The registry decides which identity each group is.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from app.models.base import FloatArray
from app.services.identity.geometry import XY, GeometryGate

TrackKey = tuple[str, int]
OCCLUSION_OVERLAP = 0.3
"""A crop that shares more than this share of its area with another box of its camera is not learnt from."""


@dataclass(slots=True)
class Observation:
    """One track of one camera in the current global frame."""

    camera_id: str
    track_id: int
    embedding: FloatArray | None
    map_xy: tuple[float, float] | None
    quality: float = 1.0
    """Detection confidence in 0..1; appearance is learnt only from observations of enough quality."""
    bbox_xyxy: tuple[float, float, float, float] | None = None
    """Image box, used to skip learning from crops that other people overlap."""
    map_sigma_m: float | None = None
    """How far off ``map_xy`` may be (1-σ, metres; `homography.foot_sigma_m`): sightings of one person by
    several cameras are fused weighted by its inverse square."""


@dataclass(slots=True)
class Group:
    """Observations of one person now: at most one per camera, standing on one spot."""

    members: list[Observation]
    target: int | None = None

    @property
    def keys(self) -> list[TrackKey]:
        return [(o.camera_id, o.track_id) for o in self.members]

    @property
    def xy(self) -> XY | None:
        """One ground position per person: the sightings' foot points, each weighted by how precisely its camera
        places it (inverse variance; equal weights where no camera says)."""
        located = [o for o in self.members if o.map_xy is not None]
        if not located:
            return None
        w = np.array([1.0 / max(o.map_sigma_m or 1.0, 0.05) ** 2 for o in located])
        pts = np.array([o.map_xy for o in located])
        x, y = (w[:, None] * pts).sum(0) / w.sum()
        return (float(x), float(y))


def group_by_place(observations: list[Observation], geometry: GeometryGate) -> list[Group]:
    """Same-time observations of different cameras that stand on one spot, one per camera per group.

    Closest pairs join first (complete linkage: every pair in a group is within the same-time gate). A
    wrong group in one frame (a person missed by one camera while a neighbour stands within the gate) costs
    nothing lasting: tracks follow their group's identity only after ``switch_frames`` frames.
    """
    obs = list(observations)
    pairs: list[tuple[float, int, int]] = []
    for i, j in itertools.combinations(range(len(obs)), 2):
        a, b = obs[i], obs[j]
        if a.map_xy is None or b.map_xy is None:
            continue
        agree = geometry.same_time(a.camera_id, a.map_xy, b.camera_id, b.map_xy)
        if agree is None:
            continue
        pairs.append((-agree, i, j))
    owner = list(range(len(obs)))
    members: dict[int, list[int]] = {i: [i] for i in range(len(obs))}
    for _, i, j in sorted(pairs):
        gi, gj = owner[i], owner[j]
        if gi == gj:
            continue
        merged = members[gi] + members[gj]
        if len({obs[m].camera_id for m in merged}) < len(merged):
            continue
        if any(
            geometry.same_time(obs[x].camera_id, obs[x].map_xy, obs[y].camera_id, obs[y].map_xy) is None
            for x in members[gi]
            for y in members[gj]
        ):
            continue
        members[gi] = merged
        del members[gj]
        for m in merged:
            owner[m] = gi
    return [Group([obs[m] for m in ms]) for ms in members.values()]


def occluded(observations: list[Observation]) -> set[TrackKey]:
    """Tracks whose box shares more than `OCCLUSION_OVERLAP` of its area with another box of its camera."""
    out: set[TrackKey] = set()
    per_cam: dict[str, list[Observation]] = defaultdict(list)
    for o in observations:
        if o.bbox_xyxy is not None:
            per_cam[o.camera_id].append(o)
    for obs in per_cam.values():
        for a, b in itertools.permutations(obs, 2):
            ax1, ay1, ax2, ay2 = a.bbox_xyxy  # type: ignore[misc]
            bx1, by1, bx2, by2 = b.bbox_xyxy  # type: ignore[misc]
            inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
            area = max(1e-9, (ax2 - ax1) * (ay2 - ay1))
            if inter / area > OCCLUSION_OVERLAP:
                out.add((a.camera_id, a.track_id))
    return out


def looks_of(g: Group) -> np.ndarray | None:
    """Mean of the unit descriptors of a group's sightings this frame (its dot with a unit vector is their mean
    cosine); None when none was described."""
    vecs = [u for o in g.members if o.embedding is not None and (u := unit_of(o.embedding)) is not None]
    return np.mean(vecs, axis=0) if vecs else None


def unit_of(v: np.ndarray) -> np.ndarray | None:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else None
