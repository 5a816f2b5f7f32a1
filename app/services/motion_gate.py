"""Skip person detection on camera frames where nothing moved (like Frigate's motion detector, but coarser).

Per camera, the frame is shrunk to a small grey thumbnail and compared with the thumbnail of the frame the
detector last saw. When fewer than ``min_changed`` of its pixels changed by more than ``pixel_delta`` grey levels,
the detector's previous boxes stand for this frame too (nobody moved, so they are still right) and the detector
is not run for this camera. Differences accumulate against that reference frame, so slow movement still triggers
detection, and ``max_skip`` bounds how many frames in a row may reuse boxes (people who stand very still, and
lighting that drifts, are re-detected at least that often).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

from app.models.base import ImageBGR

if TYPE_CHECKING:
    from app.core.config import Settings

THUMB = (160, 120)


@dataclass(slots=True)
class _CameraState:
    reference: npt.NDArray[np.uint8]
    skipped: int = 0


class MotionGate:
    def __init__(self, min_changed: float = 0.002, pixel_delta: int = 12, max_skip: int = 4) -> None:
        if not 0.0 <= min_changed < 1.0 or pixel_delta < 1 or max_skip < 0:
            raise ValueError("motion gate: min_changed in [0, 1), pixel_delta >= 1, max_skip >= 0")
        self.min_changed = min_changed
        self.pixel_delta = pixel_delta
        self.max_skip = max_skip
        self._cameras: dict[str, _CameraState] = {}
        self.checked = 0
        self.skipped = 0

    @classmethod
    def from_settings(cls, s: Settings) -> MotionGate | None:
        """The gate the settings ask for, or None when it is off."""
        if not s.motion_gate:
            return None
        return cls(s.motion_gate_min_changed, s.motion_gate_pixel_delta, s.motion_gate_max_skip)

    def needs_detection(self, camera_id: str, image: ImageBGR) -> bool:
        """True when the detector must run on this frame (and it becomes the camera's new reference)."""
        self.checked += 1
        thumb = thumbnail(image)
        state = self._cameras.get(camera_id)
        if state is None or state.reference.shape != thumb.shape or state.skipped >= self.max_skip:
            self._cameras[camera_id] = _CameraState(thumb)
            return True
        changed = np.count_nonzero(cv2.absdiff(thumb, state.reference) > self.pixel_delta) / thumb.size
        if changed >= self.min_changed:
            self._cameras[camera_id] = _CameraState(thumb)
            return True
        state.skipped += 1
        self.skipped += 1
        return False

    def forget(self, camera_id: str) -> None:
        self._cameras.pop(camera_id, None)


def thumbnail(image: ImageBGR) -> npt.NDArray[np.uint8]:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(grey, THUMB, interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.GaussianBlur(small, (3, 3), 0), np.uint8)
