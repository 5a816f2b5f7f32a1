"""Clothing colour per body part: an appearance descriptor built for people, with no weights to fetch.

ImageNet features describe objects, not outfits: on our data the same person scores a median cosine of 0.67
against 0.61 for different people. What tells people apart at a distance is the colour of what they wear, per
body part. So a crop is cut into horizontal parts (head, upper torso, lower torso, upper legs, lower legs) and
each part gets a hue × saturation histogram of its chromatic pixels plus a brightness histogram of its grey ones
(black, grey and white clothes carry no hue). Only the crop's central columns are used — the box edges are
mostly background — and pixels are weighted towards the centre line. Each part's histogram is square-rooted
(Hellinger), so cosine similarity compares distributions rather than being ruled by one dominant bin, and the
parts are weighted by how much they say (torso and legs more than the head).

Cost: about 0.1 ms per crop on one core (NumPy/OpenCV only), so every track can be described every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from app.models.base import FloatArray, ImageBGR, ModelInfo

PARTS: tuple[tuple[float, float, float], ...] = (
    # (top, bottom) as shares of the box height, weight
    (0.00, 0.18, 0.5),  # head and hair
    (0.18, 0.38, 1.0),  # shoulders, upper torso
    (0.38, 0.58, 1.0),  # lower torso, belt
    (0.58, 0.79, 1.0),  # thighs
    (0.79, 1.00, 0.7),  # shins and shoes (often cut or on the ground's colour)
)
HUE_BINS = 12
SAT_BINS = 3
GREY_BINS = 5
SAT_MIN = 40
"""Saturation (0..255) below which a pixel counts as grey: its hue is noise."""
DARK_MAX = 35
"""Value (0..255) below which a pixel counts as dark whatever its saturation."""
WIDTH_KEEP = 0.6
"""Central share of the crop's columns that is described (box edges are mostly background)."""
CROP_HW = (96, 40)


@dataclass(slots=True, frozen=True)
class _Layout:
    part_dim: int = HUE_BINS * SAT_BINS + GREY_BINS

    @property
    def dim(self) -> int:
        return self.part_dim * len(PARTS)


LAYOUT = _Layout()


class PartColourEmbedder:
    """`AppearanceEmbedder`: per-part HSV histograms, square-rooted, weighted and L2-normalised."""

    def __init__(self) -> None:
        self.dim = LAYOUT.dim
        self.info = ModelInfo(name="part-colour", device="cpu", precision="fp32")
        h, w = CROP_HW
        xs = np.linspace(-1.0, 1.0, w)
        # columns: a triangular weight peaking on the centre line, zero outside the kept share
        col = np.clip(1.0 - np.abs(xs) / WIDTH_KEEP, 0.0, None)
        self._weights = np.repeat(col[None, :], h, axis=0).astype(np.float32)
        self._rows = [(round(t * h), max(round(t * h) + 1, round(b * h))) for t, b, _ in PARTS]
        self._part_w = np.sqrt(np.asarray([p[2] for p in PARTS], np.float32))

    def describe(self, crop: ImageBGR) -> FloatArray:
        """One crop's descriptor (zeros for an empty crop)."""
        out = np.zeros(self.dim, np.float32)
        if crop.size == 0 or crop.ndim != 3:
            return out
        h, w = CROP_HW
        small = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if crop.shape[0] > h else cv2.INTER_LINEAR)
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV)
        hue = hsv[..., 0].astype(np.int32) * HUE_BINS // 180
        sat = np.minimum(hsv[..., 1].astype(np.int32) * SAT_BINS // 256, SAT_BINS - 1)
        val = hsv[..., 2].astype(np.int32)
        grey = (hsv[..., 1] < SAT_MIN) | (val < DARK_MAX)
        # chromatic pixels → hue×saturation bin; grey ones → one of GREY_BINS brightness bins after them
        bins = np.where(grey, HUE_BINS * SAT_BINS + np.minimum(val * GREY_BINS // 256, GREY_BINS - 1),
                        hue * SAT_BINS + sat)
        pd = LAYOUT.part_dim
        for p, (r0, r1) in enumerate(self._rows):
            hist = np.bincount(bins[r0:r1].ravel(), weights=self._weights[r0:r1].ravel(), minlength=pd)
            total = float(hist.sum())
            if total > 0:
                out[p * pd : (p + 1) * pd] = np.sqrt(hist / total) * self._part_w[p]
        norm = float(np.linalg.norm(out))
        return out / norm if norm > 0 else out

    def embed(self, crops: list[ImageBGR]) -> FloatArray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.describe(c) for c in crops]).astype(np.float32)

    def warmup(self) -> None:
        self.embed([np.full((*CROP_HW, 3), 127, np.uint8)])
