"""Things the detector takes for a person that never move: a post, a sprinkler, a coat on a hook.

Such a false detection is steady (the same pixels give the same box frame after frame), so the camera tracker
follows it for as long as the task runs and it would be a "person" with a global id of its own, counted in
analytics and offered to re-entry linking as someone who left. No person in the labelled sets was that still:
over 5 s every person's box drifted to an IoU of 0.74 or less with where it started, while the sets' one
such object (a sprinkler on the grass, n6-val) stayed above 0.94 (docs/accuracy.md). So a track whose box keeps
an IoU of at least ``min_iou`` with its first box for ``after_s`` seconds of detections is taken for an object:
it is no longer reported, and its spot is remembered, so the same object's later tracks are never reported at
all. A track that moves (its box leaves that IoU) is a person after all and is reported again.

Frigate keeps such objects and marks them stationary; here they would be ids and counts, so they are left out.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from app.core.config import Settings

Box = tuple[float, float, float, float]
T = TypeVar("T")


class DiscardsTracks(Protocol):
    """The identity layer, as far as still objects go (`IdentityRegistry.discard_track`)."""

    def discard_track(self, camera_id: str, track_id: int, now_s: float) -> None: ...


@dataclass(frozen=True, slots=True)
class Sighting:
    """A track of one camera in one frame, as far as stillness goes."""

    track_id: int
    bbox_xyxy: Box
    detected: bool
    """Matched to a detection this frame (a predicted box says nothing about the thing itself)."""


@dataclass(slots=True)
class _Watch:
    first: Box
    since_s: float
    still: bool = False
    moved: bool = False


@dataclass(slots=True)
class Screened:
    """Which of a frame's tracks to report, and which were found to be objects this frame."""

    keep: list[bool]
    found: list[int] = field(default_factory=list)


class StillObjects:
    """Per camera, which tracks are things that never move (see the module docstring)."""

    def __init__(self, after_s: float = 5.0, min_iou: float = 0.9, spots_per_camera: int = 16) -> None:
        if after_s <= 0 or not 0.0 < min_iou < 1.0 or spots_per_camera < 1:
            raise ValueError("still objects: after_s > 0, min_iou in (0, 1), spots_per_camera >= 1")
        self.after_s = after_s
        self.min_iou = min_iou
        self._watches: dict[str, dict[int, _Watch]] = {}
        self._spots: dict[str, deque[Box]] = {}
        self._spots_per_camera = spots_per_camera

    @classmethod
    def from_settings(cls, s: Settings) -> StillObjects | None:
        return StillObjects(s.still_object_after_s, s.still_object_min_iou) if s.still_object_after_s > 0 else None

    def spots(self, camera_id: str) -> list[Box]:
        """Where this camera's still objects stand (the box of each, oldest first)."""
        return list(self._spots.get(camera_id, ()))

    def screen(self, camera_id: str, sightings: Sequence[Sighting], now_s: float) -> Screened:
        """Which of one camera's current tracks are reported; tracks not listed are forgotten (ended)."""
        before = self._watches.get(camera_id, {})
        spots = self._spots.setdefault(camera_id, deque(maxlen=self._spots_per_camera))
        watches: dict[int, _Watch] = {}
        out = Screened([])
        for s in sightings:
            w = before.get(s.track_id)
            if w is None:
                at_spot = s.detected and any(iou(s.bbox_xyxy, b) >= self.min_iou for b in spots)
                w = _Watch(s.bbox_xyxy, now_s, still=at_spot)
            watches[s.track_id] = w
            if s.detected and not w.moved:
                if iou(s.bbox_xyxy, w.first) < self.min_iou:
                    w.moved, w.still = True, False
                elif not w.still and now_s - w.since_s >= self.after_s:
                    w.still = True
                    out.found.append(s.track_id)
                    if not any(iou(w.first, b) >= self.min_iou for b in spots):
                        spots.append(w.first)
            out.keep.append(not w.still)
        self._watches[camera_id] = watches
        return out

    def people(
        self, camera_id: str, tracks: Sequence[T], sightings: Sequence[Sighting], identities: DiscardsTracks,
        now_s: float,
    ) -> list[T]:
        """One camera's ``tracks`` (``sightings`` describes each) without those of still objects; a track found to
        be one now is discarded by the identity layer too. The pipeline and the identity replay both call this."""
        screened = self.screen(camera_id, sightings, now_s)
        for track_id in screened.found:
            identities.discard_track(camera_id, track_id, now_s)
        return [t for t, keep in zip(tracks, screened.keep, strict=True) if keep]


def iou(a: Box, b: Box) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
