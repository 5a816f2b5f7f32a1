"""How large each camera's frame goes into the detector: close views shrunk so people are not too large for it.

NanoDet fits every frame into one input size (416). Far cameras then show people 30–80 network pixels tall, which
it scores well; a close view (people 170 px tall in a 480-px frame, or a narrow crop that the fit enlarges) shows
them 110–150 px tall, and there it scores most people below the 0.6 a new track needs: on the labelled sets' closest
view 19–29 % of people reached 0.6 at 416 against 60–94 % with the frame shrunk so people stand about 100 px tall,
while shrinking a far camera the same way lost a quarter of its people (docs/accuracy.md). So the input is chosen
per camera: from the median height of the people the camera's tracks recently matched, the largest input (a
multiple of 32, at most the model's) at which that median stays within ``max_person_px`` network pixels (through
the detector's own tiling of the frame); cameras whose people already fit keep the model's size. The other way
round, a far view (PETS: people 42 network pixels tall at 416) is enlarged to the smallest input at which the median
reaches ``min_person_px`` (at most ``max_size``): on PETS the share of people scored ≥ 0.6 rose from 0.82 at 416
to 0.86 at 480, while a view whose people stand about 60 px gained nothing at 512.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from app.models.tiling import plan_tiles, tile_count

if TYPE_CHECKING:
    from app.core.config import Settings

STEP = 32
"""Input sizes are multiples of the network's largest stride."""


@dataclass(slots=True)
class _Camera:
    heights: deque[float]
    size: int | None = None
    since: int = 0


@dataclass(slots=True)
class DetectorScale:
    """Per camera, the detector input size (None: the model's own) from the heights of the people it recently saw."""

    input_size: int
    """The model's input size: what a camera gets while its people fit."""
    max_person_px: float = 96.0
    min_size: int = 192
    min_person_px: float = 0.0
    """Enlarge a camera whose median person is smaller than this (network pixels); 0: never."""
    max_size: int | None = None
    """The largest input a camera is enlarged to (None: the model's size, i.e. never enlarged)."""
    window: int = 200
    """Detections whose heights make the median (the most recent)."""
    min_boxes: int = 20
    """No change before this many detections."""
    every: int = 35
    """Frames between decisions (5 s at 7 fps): the size does not flicker as the median moves."""
    tiles: str = "auto"
    tile_overlap: float = 0.2
    """How the detector cuts a frame (`tiling`): a wide frame's tiles set its scale, not its whole width."""
    _cameras: dict[str, _Camera] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_person_px <= 0 or not STEP <= self.min_size <= self.input_size or self.min_boxes < 1:
            raise ValueError("detector scale: max_person_px > 0, 32 <= min_size <= input_size, min_boxes >= 1")
        if not 0 <= self.min_person_px < self.max_person_px or (self.max_size or self.input_size) < self.input_size:
            raise ValueError("detector scale: 0 <= min_person_px < max_person_px, max_size >= input_size")

    @classmethod
    def from_settings(cls, s: Settings) -> DetectorScale | None:
        if s.detect_max_person_px <= 0 and s.detect_min_person_px <= 0:
            return None
        return cls(
            s.nanodet_input_size, s.detect_max_person_px if s.detect_max_person_px > 0 else math.inf,
            min(s.nanodet_input_size, 192), s.detect_min_person_px,
            max(s.nanodet_input_size, s.detect_max_input_size), tiles=s.nanodet_tiles,
            tile_overlap=s.nanodet_tile_overlap,
        )  # fmt: skip

    def size(self, camera_id: str) -> int | None:
        cam = self._cameras.get(camera_id)
        if cam is None or cam.size is None:
            return None
        size = min(cam.size, self.max_size or self.input_size)  # a limit lowered since (another worker's detector)
        return None if size == self.input_size else size

    def observe(self, camera_id: str, frame_hw: tuple[int, int], heights: Sequence[float]) -> None:
        """Learn from the heights (image pixels) of the people a frame's tracks matched (not every detection: a
        post the detector fires on would count); now and then decide the camera's size anew."""
        cam = self._cameras.get(camera_id)
        if cam is None:
            cam = self._cameras[camera_id] = _Camera(deque(maxlen=self.window))
        cam.heights.extend(heights)
        cam.since += 1
        if cam.since < self.every or len(cam.heights) < self.min_boxes:
            return
        cam.since = 0
        h, w = frame_hw
        count = tile_count(self.tiles, w, h)
        fit = plan_tiles(0, w, h, count, self.tile_overlap, self.input_size)[0].scale  # at the model's size
        median = float(np.median(cam.heights))
        top = self.max_size or self.input_size
        if median * fit < self.min_person_px and top > self.input_size:
            wanted = self.input_size * self.min_person_px / max(median * fit, 1e-6)
            cam.size = min(top, math.ceil(wanted / STEP) * STEP)
            return
        if median * fit <= self.max_person_px:
            cam.size = None
            return
        wanted = self.input_size * self.max_person_px / (median * fit)
        cam.size = max(self.min_size, int(wanted) // STEP * STEP)
