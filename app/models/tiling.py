"""Cutting a frame into overlapping side-by-side tiles for fixed-size detector inputs.

Squeezing a 16:9 frame into a square network input leaves distant people a few pixels wide; a few
overlapping near-square tiles keep them large enough. Each tile *owns* the boxes whose centre falls in its
stripe (the overlap is split at its middle), so a person seen by two tiles is reported once without NMS
across tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.models.base import FloatArray

WIDE_ASPECT = 1.4
"""Width/height above which ``auto`` uses two tiles (4:3 = 1.33 stays one tile, 16:9 = 1.78 two)."""


@dataclass(frozen=True, slots=True)
class Tile:
    """Where a network input came from: image index, crop bounds, crop→input scale, owned x-range."""

    image: int
    x0: int
    x1: int
    y0: int
    y1: int
    scale: float
    keep_x0: float
    """Keep only boxes whose centre x lies in ``[keep_x0, keep_x1)``."""
    keep_x1: float

    def to_image(self, boxes: FloatArray, scores: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Input-pixel boxes → image pixels, dropping those whose centre another tile owns."""
        boxes = boxes / self.scale + np.array([self.x0, self.y0, self.x0, self.y0], np.float32)
        cx = (boxes[:, 0] + boxes[:, 2]) / 2
        owned = (cx >= self.keep_x0) & (cx < self.keep_x1)
        return boxes[owned].astype(np.float32), scores[owned].astype(np.float32)


def tile_count(mode: str, width: int, height: int) -> int:
    """``auto``: one tile up to about 4:3, two beyond; else the given number."""
    if mode == "auto":
        return 2 if width > WIDE_ASPECT * height else 1
    n = int(mode)
    if n < 1:
        raise ValueError(f"tile count must be 'auto' or at least 1, not {mode!r}")
    return n


def plan_tiles(index: int, width: int, height: int, count: int, overlap: float, input_size: int) -> list[Tile]:
    """``count`` equal tiles across the full height; neighbours share ``overlap`` of a tile's width."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"tile overlap must be in [0, 1), not {overlap}")
    if count == 1:
        return [Tile(index, 0, width, 0, height, min(input_size / width, input_size / height), -np.inf, np.inf)]
    tw = min(width, round(width / (count - (count - 1) * overlap)))
    scale = min(input_size / tw, input_size / height)
    starts = [round(i * (width - tw) / (count - 1)) for i in range(count)]
    tiles = []
    for i, x0 in enumerate(starts):
        lo = -np.inf if i == 0 else (starts[i - 1] + tw + x0) / 2.0
        hi = np.inf if i == count - 1 else (x0 + tw + starts[i + 1]) / 2.0
        tiles.append(Tile(index, x0, x0 + tw, 0, height, scale, lo, hi))
    return tiles
