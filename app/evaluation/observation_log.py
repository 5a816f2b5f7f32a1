"""Recorded identity inputs: what the camera trackers handed the identity layer, frame by frame.

Detection and per-camera tracking dominate an evaluation's run time, while the identity layer is what is being
tuned. ``spoton eval --record FILE`` saves, for every global frame, each track's box and confidence plus the
appearance descriptors of its crop (every frame, so any embedding cadence can be replayed);
``spoton eval --replay FILE`` then re-runs only the identity layer over it in seconds and scores it exactly as a
full run would (the boxes are identical, only global ids can differ).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

from app.models.base import FloatArray

FORMAT_VERSION = 2
"""2: no map positions (the replay projects the boxes with the pipeline's own `HomographyService`)."""


@dataclass(slots=True)
class LoggedTrack:
    camera_id: str
    frame_index: int
    track_id: int
    bbox_xyxy: tuple[float, float, float, float]
    confidence: float
    detected: bool
    """The tracker matched a detection this frame (a crop exists to describe)."""
    descriptors: dict[str, FloatArray] = field(default_factory=dict)
    """Appearance descriptors of the crop by embedder name (empty when not detected)."""


@dataclass(slots=True)
class LoggedFrame:
    index: int
    timestamp_s: float
    tracks: list[LoggedTrack]


@dataclass(slots=True)
class ObservationLog:
    dataset: str
    embedders: list[str]
    frames: list[LoggedFrame] = field(default_factory=list)
    version: int = FORMAT_VERSION

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ObservationLog:
        with Path(path).open("rb") as fh:
            log = pickle.load(fh)  # a file this tool wrote; never load one from elsewhere
        if not isinstance(log, ObservationLog) or log.version != FORMAT_VERSION:
            raise ValueError(f"{path}: not an observation log of format {FORMAT_VERSION}; record it again")
        return log

