"""Image pixels → map metres for each camera of an environment.

A person stands where their feet touch the ground, so the point projected is the bottom-centre of the
box; the homography is a ground-plane mapping and is only valid for points on the ground.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.services.environments import EnvironmentSpec

Points = npt.NDArray[np.float64]


def apply_homography(h: npt.NDArray[np.float64], points: npt.ArrayLike) -> Points:
    """Apply a 3×3 homography to N×2 points. Points at or behind the horizon come back as NaN."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 0:
        return np.zeros((0, 2), np.float64)
    homog = np.hstack([pts, np.ones((pts.shape[0], 1))]) @ h.T
    w = homog[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = homog[:, :2] / w
    out[(w[:, 0] <= 1e-12)] = np.nan
    return out


CUT_BOX_ASPECT = 2.6
"""Height ÷ width of a whole standing person's box (median of the boxes that touch no image edge in the demo video:
2.61). A box cut off by the image's bottom edge ends at the edge, not at the feet; its foot point is put where a
whole box of its width would end (`foot_points`)."""
CUT_MARGIN_PX = 2.0
"""A box whose bottom lies this close to the image's bottom edge is taken as cut off there."""


def foot_points(
    boxes_xyxy: npt.ArrayLike, image_height: float | None = None, cut_box_aspect: float = CUT_BOX_ASPECT
) -> Points:
    """Bottom-centre of each box; for boxes cut off by the bottom edge of an image of ``image_height``, the point
    where a whole box (``cut_box_aspect`` × its width tall) would end. Near a camera, people walking out of its
    view at the bottom otherwise land metres short of where they stand, and no other camera agrees with them."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    y = b[:, 3]
    if image_height is not None and cut_box_aspect > 0:
        cut = b[:, 3] >= image_height - CUT_MARGIN_PX
        y = np.where(cut, np.maximum(y, b[:, 1] + cut_box_aspect * (b[:, 2] - b[:, 0])), y)
    return np.stack([(b[:, 0] + b[:, 2]) / 2.0, y], axis=1)


FOOT_NOISE_PX = (0.10, 0.05)
"""Foot-point uncertainty as shares of the box's width (where the feet are across the box) and height (its
bottom edge: shoes, shadows, a partly hidden person)."""


def foot_sigma_m(
    h: npt.NDArray[np.float64],
    boxes_xyxy: npt.ArrayLike,
    image_height: float | None = None,
    cut_box_aspect: float = CUT_BOX_ASPECT,
) -> npt.NDArray[np.float64]:
    """1-σ error in metres of each box's foot point on the ground: the box-relative pixel noise
    (`FOOT_NOISE_PX`) through the homography's local Jacobian. Far from a camera a pixel covers more ground, so
    the same box error means more metres; fusing sightings weights each by the inverse of this squared (measured
    at the foot point `foot_points` gives, cut-off boxes included). NaN where the point is off the ground."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    feet = foot_points(b, image_height, cut_box_aspect)
    su = FOOT_NOISE_PX[0] * np.maximum(b[:, 2] - b[:, 0], 1.0)
    sv = FOOT_NOISE_PX[1] * np.maximum(b[:, 3] - b[:, 1], 1.0)
    base = apply_homography(h, feet)
    du = apply_homography(h, feet + np.stack([su, np.zeros_like(su)], 1)) - base
    dv = apply_homography(h, feet - np.stack([np.zeros_like(sv), sv], 1)) - base
    return np.sqrt((du**2).sum(1) + (dv**2).sum(1))


class HomographyService:
    """Projects boxes of each camera of one environment onto the map, in metres."""

    def __init__(self, environment: EnvironmentSpec, cut_box_aspect: float = CUT_BOX_ASPECT) -> None:
        self._to_m = {cid: environment.image_to_metres(cid) for cid in environment.cameras}
        self._height = {cid: float(cam.height) for cid, cam in environment.cameras.items()}
        self.cut_box_aspect = cut_box_aspect
        """0: project the bottom of a cut-off box as if it were the feet."""

    @property
    def camera_ids(self) -> list[str]:
        return list(self._to_m)

    def boxes_to_map(self, camera_id: str, boxes_xyxy: npt.ArrayLike, image_height: float | None = None) -> Points:
        """N×2 map positions (metres) of the boxes' foot points (`foot_points`; ``image_height`` defaults to the
        camera's); NaN where the point is off the ground."""
        height = self._height[camera_id] if image_height is None else image_height
        return apply_homography(self._to_m[camera_id], foot_points(boxes_xyxy, height, self.cut_box_aspect))

    def boxes_sigma_m(
        self, camera_id: str, boxes_xyxy: npt.ArrayLike, image_height: float | None = None
    ) -> npt.NDArray[np.float64]:
        """How far off (1-σ, metres) each of those positions may be (`foot_sigma_m`)."""
        height = self._height[camera_id] if image_height is None else image_height
        return foot_sigma_m(self._to_m[camera_id], boxes_xyxy, height, self.cut_box_aspect)


def ground_footprint(
    image_to_m: npt.NDArray[np.float64],
    width: int,
    height: int,
    bounds_m: tuple[float, float, float, float],
    samples_per_side: int = 16,
) -> list[tuple[float, float]]:
    """The ground a camera sees, as a polygon in map metres: the image border projected onto the ground
    (points above the horizon dropped) and clipped to the map's ``(x0, y0, x1, y1)``. Empty when the camera
    sees no ground."""
    t = np.linspace(0.0, 1.0, samples_per_side, endpoint=False)
    w, h = float(width), float(height)
    border = np.concatenate(
        [
            np.stack([t * w, np.zeros_like(t)], 1),
            np.stack([np.full_like(t, w), t * h], 1),
            np.stack([w - t * w, np.full_like(t, h)], 1),
            np.stack([np.zeros_like(t), h - t * h], 1),
        ]
    )
    pts = apply_homography(image_to_m, border)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    if len(pts) < 3:
        return []
    x0, y0, x1, y1 = bounds_m
    pts[:, 0] = np.clip(pts[:, 0], x0, x1)
    pts[:, 1] = np.clip(pts[:, 1], y0, y1)
    return [(round(float(x), 3), round(float(y), 3)) for x, y in pts]


def seen_ground_area_m2(environment: EnvironmentSpec, cell_m: float = 0.25) -> float:
    """Area in m² of the map that at least one camera sees (the union of the footprints, rasterised): where a
    person can appear at all, so one over it is the chance density of "anyone" turning up at a spot."""
    import cv2

    m = environment.map
    (ox, oy), w, h = m.origin_m, m.width_m, m.height_m
    cols, rows = max(1, int(np.ceil(w / cell_m))), max(1, int(np.ceil(h / cell_m)))
    if cols * rows > 16_000_000:  # a huge map: coarser cells
        return seen_ground_area_m2(environment, cell_m * 2)
    grid = np.zeros((rows, cols), np.uint8)
    for cid, cam in environment.cameras.items():
        poly = ground_footprint(environment.image_to_metres(cid), cam.width, cam.height, (ox, oy, ox + w, oy + h))
        if len(poly) >= 3:
            px = np.round((np.asarray(poly) - (ox, oy)) / cell_m).astype(np.int32)
            cv2.fillPoly(grid, [px], 1)
    return float(grid.sum()) * cell_m * cell_m
