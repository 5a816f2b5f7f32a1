"""Model strategy protocols and the plain data they exchange.

Every model the pipeline runs sits behind one of these protocols, so a strategy (NanoDet on CPU,
Faster R-CNN on GPU, ...) is chosen by configuration without the pipeline knowing which one runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
ImageBGR = npt.NDArray[np.uint8]
"""An H×W×3 uint8 image in OpenCV's BGR channel order."""
Rect = tuple[float, float, float, float]
"""A box ``x1, y1, x2, y2`` in an image's pixels."""


@dataclass(slots=True)
class Detections:
    """Person detections of one image.

    `boxes` is N×4 float32 ``x1, y1, x2, y2`` in the image's pixels, `scores` is N float32 in 0..1.
    """

    boxes: FloatArray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: FloatArray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(slots=True, frozen=True)
class ModelInfo:
    """What a loaded model reports about itself (shown in /health and status updates)."""

    name: str
    device: str
    precision: str


@runtime_checkable
class PersonDetector(Protocol):
    """Finds people in images. One call takes every camera's frame of a global frame, so that
    strategies that batch (GPU) can, and strategies that do not simply loop."""

    info: ModelInfo

    def detect(self, images: list[ImageBGR]) -> list[Detections]: ...

    def warmup(self) -> None: ...


@runtime_checkable
class RegionDetector(Protocol):
    """A detector that can look only where it is told (around regions of each image, at the scale a full look
    would use), so frames where people occupy a third of the picture cost about a third."""

    @property
    def largest_input(self) -> int:
        """The largest ``input_sizes`` entry it honours (larger ones are clipped to it)."""
        ...

    def detect_regions(
        self, images: list[ImageBGR], regions: Sequence[Sequence[Rect] | None],
        input_sizes: Sequence[int | None] | None = None,
    ) -> list[Detections]:
        """``regions[i]``: boxes ``x1, y1, x2, y2`` in image ``i``'s pixels to look around; None: all of it.
        ``input_sizes[i]``: the network input image ``i`` is fitted into (at most ``largest_input``; None: the
        model's own size)."""
        ...


@runtime_checkable
class AppearanceEmbedder(Protocol):
    """Turns person crops into L2-normalised appearance vectors (one row per box)."""

    info: ModelInfo
    dim: int

    def embed(self, crops: list[ImageBGR]) -> FloatArray: ...

    def warmup(self) -> None: ...
