"""Per-camera multi-object tracking: BoxMOT's BoT-SORT fed with our detections and appearance embeddings.

One tracker per camera turns each frame's detections into track ids that persist while a person stays in that
camera's view; joining tracks across cameras into global identities happens elsewhere.

BoxMOT 25 notes that shape this wrapper:
- Embeddings reach BoT-SORT only through ``boxmot.structures.Detections(embeddings=...)``; packed NumPy rows
  carry none, and a BoT-SORT with appearance enabled then builds its own ReID model (a weights download).
  So every non-empty frame goes in as ``Detections`` with our embeddings, and an empty frame goes in with
  ``embeddings=None``, which BoxMOT answers without touching a model (and without recording a width of 1 that
  would make the next 1280-wide frame fail).
- Boxes must satisfy ``x2 > x1`` and ``y2 > y1`` and scores lie in ``[0, 1]`` or BoxMOT raises; degenerate or
  non-finite rows are dropped here and ``det_index`` still refers to the caller's rows.
- Camera-motion compensation is off by default: the cameras are fixed, and CMC costs a full-frame image
  registration per frame. With it off the frame is only used for its size.
- Importing ``boxmot.utils`` installs a Rich handler on the ``boxmot`` logger (INFO, ``propagate=False``) that
  prints every tracker's parameters to stderr; `quiet_boxmot_logging` routes it through our logging at WARNING.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from boxmot.structures import Boxes
from boxmot.structures import Detections as BoxmotDetections
from boxmot.trackers.box.botsort.tracker import BotSort

from app.models.base import Detections, FloatArray, ImageBGR

if TYPE_CHECKING:
    from app.core.config import Settings

log = logging.getLogger(__name__)


def quiet_boxmot_logging(level: int = logging.WARNING) -> None:
    """Send BoxMOT's log records through the application's handlers, at `level` and above."""
    boxmot_log = logging.getLogger("boxmot")
    boxmot_log.handlers.clear()
    boxmot_log.propagate = True
    boxmot_log.setLevel(level)


quiet_boxmot_logging()


@dataclass(slots=True)
class TrackedBox:
    """One confirmed track in one frame.

    `bbox_xyxy` is the tracker's (Kalman-filtered) box; the raw detection is ``detections.boxes[det_index]``
    (``det_index`` is -1 when the track was not matched to a detection of this frame). `is_new` is True on the
    first frame a track id is reported, so the caller knows when to look for a global identity.
    """

    track_id: int
    bbox_xyxy: tuple[float, float, float, float]
    confidence: float
    det_index: int
    is_new: bool = False


class CameraTracker(Protocol):
    """Tracks people in one camera's frame sequence."""

    @property
    def uses_appearance(self) -> bool:
        """Whether `update` needs an embedding per detection (else it tracks by motion and overlap alone)."""
        ...

    def update(self, frame: ImageBGR, detections: Detections, embeddings: FloatArray | None) -> list[TrackedBox]:
        """Advance one frame. `embeddings` has one row per detection (any width, constant per tracker);
        None when the tracker does not use appearance."""
        ...

    def reset(self) -> None:
        """Forget all tracks (new sequence); track ids start over."""
        ...


@dataclass(slots=True, frozen=True)
class BotSortParams:
    """BoT-SORT thresholds (BoxMOT names). `track_buffer` counts frames at 30 fps: BoxMOT rescales it to
    ``int(fps / 30 * track_buffer)`` frames, so 30 keeps a lost track for about one second at any rate."""

    track_high_thresh: float = 0.5
    track_low_thresh: float = 0.1
    new_track_thresh: float = 0.6
    track_buffer: int = 30
    match_thresh: float = 0.8
    second_match_thresh: float = 0.5
    """Largest IoU distance at which a followed track takes a low-score detection (the second pass)."""
    appearance_thresh: float = 0.25
    """Maximum cosine distance (1 - similarity) for an appearance match."""
    proximity_thresh: float = 0.5
    """Maximum IoU distance at which appearance may decide a match."""
    cmc_method: str | None = None
    """Camera-motion compensation (``"sof"``, ``"orb"``, ``"ecc"``, ``"sift"``); None for fixed cameras."""
    use_appearance: bool = True
    """Feed our embeddings to BoT-SORT's appearance cue. Off, it matches by motion and IoU only, and the
    pipeline embeds only the crops the identity registry needs (much cheaper on a CPU)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> BotSortParams:
        return cls(
            track_high_thresh=settings.tracker_track_high_thresh,
            track_low_thresh=settings.tracker_track_low_thresh,
            new_track_thresh=settings.tracker_new_track_thresh,
            track_buffer=settings.tracker_track_buffer,
            match_thresh=settings.tracker_match_thresh,
            second_match_thresh=settings.tracker_second_match_thresh,
            appearance_thresh=settings.tracker_appearance_thresh,
            proximity_thresh=settings.tracker_proximity_thresh,
            use_appearance=settings.tracker_use_appearance,
        )


class BotSortCameraTracker:
    """`CameraTracker` on BoxMOT's BoT-SORT, using the caller's embeddings as its appearance cue."""

    def __init__(self, fps: float, params: BotSortParams | None = None, camera_id: str = "camera") -> None:
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.camera_id = camera_id
        self.fps = fps
        self.params = params or BotSortParams()
        self._frame_no = 0
        self._known_ids: set[int] = set()
        self._tracker = self._make_tracker()

    @property
    def uses_appearance(self) -> bool:
        return self.params.use_appearance

    def _make_tracker(self) -> BotSort:
        p = self.params
        return BotSort(
            track_high_thresh=p.track_high_thresh,
            track_low_thresh=p.track_low_thresh,
            new_track_thresh=p.new_track_thresh,
            track_buffer=p.track_buffer,
            match_thresh=p.match_thresh,
            second_match_thresh=p.second_match_thresh,
            proximity_thresh=p.proximity_thresh,
            appearance_thresh=p.appearance_thresh,
            use_cmc=p.cmc_method is not None,
            cmc_method=p.cmc_method or "sof",
            frame_rate=max(1, round(self.fps)),
            use_embeddings=p.use_appearance,
            reid_weights=None,
            device="cpu",
        )

    def reset(self) -> None:
        self._tracker = self._make_tracker()
        self._frame_no = 0
        self._known_ids.clear()

    def update(self, frame: ImageBGR, detections: Detections, embeddings: FloatArray | None) -> list[TrackedBox]:
        n = len(detections)
        if not self.uses_appearance:
            embeddings = None
        elif embeddings is None:
            raise ValueError("this tracker uses appearance: pass one embedding row per detection")
        if embeddings is not None and embeddings.shape[0] != n:
            raise ValueError(f"{n} detections but {embeddings.shape[0]} embedding rows")
        boxes = np.asarray(detections.boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(detections.scores, np.float32).reshape(-1)
        keep = np.flatnonzero(
            np.isfinite(boxes).all(axis=1)
            & np.isfinite(scores)
            & (boxes[:, 2] > boxes[:, 0])
            & (boxes[:, 3] > boxes[:, 1])
        )
        self._frame_no += 1
        sample_id = f"{self.camera_id}:{self._frame_no}"
        emb_tensor = None
        if len(keep) and embeddings is not None:
            emb = np.ascontiguousarray(embeddings[keep], np.float32)
            if emb.ndim != 2 or emb.shape[1] == 0:
                raise ValueError(f"embeddings must be N×D with D > 0, got shape {embeddings.shape}")
            emb_tensor = torch.from_numpy(emb)
        dets = BoxmotDetections(
            geometry=Boxes(torch.from_numpy(np.ascontiguousarray(boxes[keep]))),
            scores=torch.from_numpy(np.ascontiguousarray(np.clip(scores[keep], 0.0, 1.0))),
            class_ids=torch.zeros(len(keep), dtype=torch.int64),
            sample_id=sample_id,
            embeddings=emb_tensor,
        )
        tracks = self._tracker.update(dets, frame)

        ids = tracks.track_ids.tolist()
        xyxy = tracks.geometry.values.tolist()
        confs = tracks.scores.tolist()
        det_idx = tracks.detection_indices.tolist()
        out = [
            TrackedBox(
                track_id=int(tid),
                bbox_xyxy=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                confidence=float(c),
                det_index=int(keep[d]) if d >= 0 else -1,
                is_new=tid not in self._known_ids,
            )
            for tid, b, c, d in zip(ids, xyxy, confs, det_idx, strict=True)
        ]
        # Reported ids still alive in the tracker (tracked or lost): bounded, and a lost track that comes back
        # is not "new"; an unconfirmed track is not in the set until it is first reported.
        alive = {t.id for t in self._tracker.active_tracks} | {t.id for t in self._tracker.lost_stracks}
        self._known_ids = (self._known_ids | set(ids)) & alive
        return out


class CameraTrackerFactory:
    """Builds one independent tracker per camera from the settings."""

    def __init__(self, settings: Settings) -> None:
        self.params = BotSortParams.from_settings(settings)

    def create(self, camera_id: str, fps: float) -> CameraTracker:
        return BotSortCameraTracker(fps=fps, params=self.params, camera_id=camera_id)
