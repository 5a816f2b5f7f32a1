"""Where a person can be: the geometric rules that gate cross-camera identity.

* Same time: one person seen at the same moment by two cameras stands on one spot of the map, so two
  sightings can be that person only if the cameras overlap and their map positions agree within
  ``max_map_distance_m`` (foot points from boxes are off by a few decimetres, hence ~1 m).
* Over time: someone last seen ``dt`` seconds ago at ``p`` can now be at most ``max_map_distance_m +
  max_speed_mps × dt`` away (walking speed bounds travel between cameras, whether or not they overlap).

An environment that lists no overlaps at all says nothing about them (every pair may overlap); one that lists
some is taken at its word: two cameras not listed never see the same person at the same time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

XY = tuple[float, float]


@dataclass(slots=True, frozen=True)
class GeometryConfig:
    max_map_distance_m: float = 1.0
    max_speed_mps: float = 3.0

    def __post_init__(self) -> None:
        if self.max_map_distance_m <= 0:
            raise ValueError("max_map_distance_m must be > 0")
        if self.max_speed_mps <= 0:
            raise ValueError("max_speed_mps must be > 0")


class GeometryGate:
    """Same-time agreement and travel-time reachability between sightings on the map."""

    def __init__(self, config: GeometryConfig, overlaps: set[frozenset[str]] | None = None) -> None:
        self.config = config
        self.overlaps = overlaps or None

    def may_co_observe(self, cam_a: str, cam_b: str) -> bool:
        """Whether two different cameras can show the same person at the same moment."""
        if cam_a == cam_b:
            return False
        return self.overlaps is None or frozenset((cam_a, cam_b)) in self.overlaps

    def same_time(self, cam_a: str, xy_a: XY | None, cam_b: str, xy_b: XY | None) -> float | None:
        """Agreement in [0, 1] of two same-time sightings (1: same spot), or None when impossible.

        Without a map position on either side only the camera topology can rule it out (agreement 0).
        """
        if not self.may_co_observe(cam_a, cam_b):
            return None
        if xy_a is None or xy_b is None:
            return 0.0
        d = math.dist(xy_a, xy_b)
        if d > self.config.max_map_distance_m:
            return None
        return 1.0 - d / self.config.max_map_distance_m

    def reach_m(self, dt_s: float, speed_mps: float | None = None) -> float:
        """How far from a sighting someone can be ``dt_s`` later at ``speed_mps`` (default ``max_speed_mps``),
        foot-point error included."""
        speed = self.config.max_speed_mps if speed_mps is None else speed_mps
        return self.config.max_map_distance_m + speed * max(0.0, dt_s)

    def reachable(self, xy_from: XY | None, t_from: float, xy_to: XY | None, t_to: float) -> float | None:
        """Plausibility in [0, 1] of walking from one sighting to a later one (1: no distance at all), or
        None when it would need more than ``max_speed_mps``. Unknown positions are plausible (0)."""
        if xy_from is None or xy_to is None:
            return 0.0
        reach = self.reach_m(t_to - t_from)
        d = math.dist(xy_from, xy_to)
        if d > reach:
            return None
        return 1.0 - d / reach
