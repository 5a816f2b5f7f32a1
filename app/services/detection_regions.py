"""Where the detector needs to look in each camera's frame: where the picture changed and where people were.

People cover about a third of a frame in our cameras (the bounding box of all of them, with a margin: 0.30–0.36 of
the frame on average in the labelled sets), so looking only there saves most of the detector's work — Frigate runs
its detector only on motion regions for the same reason. Per camera:

* **people already found**: each box of the previous detections, grown by ``grow`` of its size on every side, is
  a region, so someone who stands still is still looked at;
* **motion elsewhere**: a small grey thumbnail of the frame is compared with the previous frame's; pixels that
  changed by more than ``pixel_delta`` grey levels, dilated, form blobs; those not mostly inside a region above
  (someone coming in) are regions too;
* **a full look** every ``full_every`` frames (and on a camera's first frame or a change of size), so a person
  the detector missed while they stood still, or a change the thumbnail cannot see, is found within that many
  frames.

The detector (`RegionDetector`) merges the regions into windows on its input grid, and falls back to a full look
when they would cover most of the frame anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from app.models.base import Detections, FloatArray, ImageBGR, Rect
from app.services.motion_gate import THUMB, thumbnail

if TYPE_CHECKING:
    from app.core.config import Settings

DILATE = np.ones((3, 3), np.uint8)


@dataclass(slots=True)
class _CameraState:
    previous: npt.NDArray[np.uint8]
    since_full: int = 0
    boxes: FloatArray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


class RegionPlanner:
    """Per camera, the regions the detector should look at this frame (None: the whole frame)."""

    def __init__(self, full_every: int = 8, pixel_delta: int = 12, grow: float = 0.1, min_blob_px: int = 2) -> None:
        if full_every < 1 or not 1 <= pixel_delta <= 255 or grow < 0 or min_blob_px < 1:
            raise ValueError("regions: full_every >= 1, pixel_delta in 1..255, grow >= 0, min_blob_px >= 1")
        self.full_every = full_every
        self.pixel_delta = pixel_delta
        self.grow = grow
        self.min_blob_px = min_blob_px
        self._cameras: dict[str, _CameraState] = {}
        self.looks = 0
        self.full_looks = 0

    @classmethod
    def from_settings(cls, s: Settings) -> RegionPlanner | None:
        """The planner the settings ask for, or None when the detector should look at whole frames."""
        if not s.detect_regions:
            return None
        return cls(s.detect_regions_full_every, s.motion_gate_pixel_delta)

    def regions(self, camera_id: str, image: ImageBGR) -> list[Rect] | None:
        """Regions of ``image`` (its pixels) to look at now; None for a full look."""
        self.looks += 1
        thumb = thumbnail(image)
        state = self._cameras.get(camera_id)
        if state is None or state.previous.shape != thumb.shape or state.since_full + 1 >= self.full_every:
            boxes = state.boxes if state is not None else np.zeros((0, 4), np.float32)
            self._cameras[camera_id] = _CameraState(thumb, 0, boxes)
            self.full_looks += 1
            return None
        height, width = image.shape[:2]
        people: list[Rect] = []
        for x1, y1, x2, y2 in state.boxes.tolist():
            gx, gy = self.grow * (x2 - x1), self.grow * (y2 - y1)
            people.append((max(0.0, x1 - gx), max(0.0, y1 - gy), min(width, x2 + gx), min(height, y2 + gy)))
        moved = [m for m in self._motion(thumb, state.previous, width / THUMB[0], height / THUMB[1])
                 if not any(_mostly_inside(m, p) for p in people)]  # fmt: skip
        state.previous = thumb
        state.since_full += 1
        return people + moved

    def detected(self, camera_id: str, detections: Detections) -> None:
        """What the detector found in the camera's frame just planned (its people are looked at next frame)."""
        state = self._cameras.get(camera_id)
        if state is not None:
            state.boxes = detections.boxes.copy()

    def _motion(
        self, thumb: npt.NDArray[np.uint8], previous: npt.NDArray[np.uint8], sx: float, sy: float
    ) -> list[Rect]:
        changed = (cv2.absdiff(thumb, previous) > self.pixel_delta).astype(np.uint8)
        if not changed.any():
            return []
        grown = cv2.dilate(changed, DILATE, iterations=2)
        n, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
        out = []
        for x, y, w, h, area in stats[1:n].tolist():
            if area >= self.min_blob_px:
                out.append((x * sx, y * sy, (x + w) * sx, (y + h) * sy))
        return out


def _mostly_inside(a: Rect, b: Rect, share: float = 0.7) -> bool:
    """Whether at least ``share`` of box ``a`` lies inside box ``b`` (motion of someone already looked at)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-9)
    return w > 0 and h > 0 and w * h >= share * area
