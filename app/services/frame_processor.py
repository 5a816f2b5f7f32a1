"""One global frame through the models: detect → embed → track → map → identify.

This is the whole analysis of a frame, in order, in one place. It is synchronous and CPU/GPU-bound, so the
orchestrator runs it in a worker thread; every model call takes all cameras of the global frame at once.
JPEG encoding (``encode_frame``) is separate so it can run in a pool while the models take the next frame.
"""

from __future__ import annotations

import math
import pickle
import threading
import time
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from app.models.base import AppearanceEmbedder, Detections, ImageBGR, PersonDetector, RegionDetector
from app.services.checkpoint_format import CheckpointFormatError, state_format
from app.services.crop_photometry import AsRecorded, CropPhotometry
from app.services.detection_regions import RegionPlanner
from app.services.detector_scale import DetectorScale
from app.services.frame_encoder import FrameEncoder
from app.services.homography import HomographyService
from app.services.motion_gate import MotionGate
from app.services.reid import IdentityEvent, IdentityRegistry, Observation
from app.services.still_objects import Sighting, StillObjects
from app.services.tracking import CameraTracker, TrackedBox
from app.services.video_data_manager import GlobalFrame
from app.utils.wire import FrameHeader, pack_frame

MIN_CROP_PX = 8


@dataclass(slots=True)
class TrackOut:
    track_id: int
    global_id: int
    bbox_xyxy: tuple[float, float, float, float]
    confidence: float
    map_coords: tuple[float, float] | None
    detected: bool = True
    """Matched to a detection this frame (False: the tracker's prediction through a missed detection)."""


@dataclass(slots=True)
class CameraResult:
    camera_id: str
    frame_index: int
    timestamp_video_s: float
    tracks: list[TrackOut]
    image: ImageBGR


@dataclass(slots=True)
class FrameResult:
    """What the models made of one global frame (frames not yet encoded)."""

    global_frame_index: int
    timestamp_video_s: float
    cameras: list[CameraResult]
    stage_ms: dict[str, float] = field(default_factory=dict)
    identity_events: list[IdentityEvent] = field(default_factory=list)
    """What the identity registry decided this frame (created, matched, merged, moved, lost)."""

    @property
    def persons(self) -> int:
        return len({t.global_id for c in self.cameras for t in c.tracks})

    @property
    def model_ms(self) -> float:
        return self.stage_ms.get("detect", 0.0) + self.stage_ms.get("embed", 0.0)


@dataclass(slots=True, frozen=True)
class DetectedFrame:
    """A global frame's detections, made ahead of the rest of its processing."""

    index: int
    cameras: list[str]
    detections: list[Detections]
    ms: float


@dataclass(slots=True, frozen=True)
class EncodedFrame:
    camera_id: str
    message: bytes
    """Binary WebSocket message: header + JPEG."""
    low: bytes | None = None
    """The same frame downscaled at low quality, for clients that cannot keep up (when asked for)."""


def describe_now(n: int, first_n: int, every_n: int, wants_looks: bool = True) -> bool:
    """Whether a track seen with a detection ``n`` times before is described (embedded) now: on each of its first
    ``first_n`` detected frames while its person still wants looks (`IdentityRegistry.needs_looks`: a newcomer
    needs a few before re-entry linking can weigh them), and on every ``every_n``-th to keep its gallery fresh."""
    return (wants_looks and n < first_n) or n % max(1, every_n) == 0


def crop_boxes(image: ImageBGR, boxes: np.ndarray) -> tuple[list[ImageBGR], list[int]]:
    """Crops of the boxes (clipped to the image) and the indices of boxes big enough to describe."""
    h, w = image.shape[:2]
    crops: list[ImageBGR] = []
    kept: list[int] = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        a, b = max(0, int(x1)), max(0, int(y1))
        c, d = min(w, math.ceil(x2)), min(h, math.ceil(y2))
        if c - a >= MIN_CROP_PX and d - b >= MIN_CROP_PX:
            crops.append(image[b:d, a:c])
            kept.append(i)
    return crops, kept


class FrameProcessor:
    """Holds the per-task model state (trackers, identities) and processes global frames in order."""

    def __init__(
        self,
        detector: PersonDetector,
        embedder: AppearanceEmbedder,
        trackers: dict[str, CameraTracker],
        homography: HomographyService,
        identities: IdentityRegistry,
        embed_every_n: int = 5,
        embed_first_n: int = 1,
        motion_gate: MotionGate | None = None,
        tracker_embedder: AppearanceEmbedder | None = None,
        regions: RegionPlanner | None = None,
        photometry: CropPhotometry | None = None,
        still: StillObjects | None = None,
        scale: DetectorScale | None = None,
    ) -> None:
        self.detector = detector
        self.embedder = embedder
        self.tracker_embedder = tracker_embedder
        """What trackers that use appearance get for every detection; None: the identity embedder's vectors
        (then they are reused for the identity registry)."""
        self.trackers = trackers
        self.homography = homography
        self.identities = identities
        self.embed_every_n = max(1, embed_every_n)
        self.embed_first_n = embed_first_n
        self._described: dict[tuple[str, int], tuple[int, int]] = {}
        self.motion_gate = motion_gate
        self._last_detections: dict[str, Detections] = {}
        self.regions = regions if isinstance(detector, RegionDetector) else None
        """Where the detector looks in each frame (`RegionPlanner`); None: everywhere."""
        self._completed = -1
        self._before_detect: dict[int, bytes] = {}
        """Detection-side state (motion gate, its boxes, region planner) as it was before each frame detected but
        not yet completed: a checkpoint taken while the next frame is detected ahead must not carry that frame's
        detection, or the resumed task would plan its detection from what it already saw."""
        self._lock = threading.Lock()
        self.still = still
        """Tracks of things that never move, left out (`StillObjects`); None: every track is reported."""
        self.scale = scale if isinstance(detector, RegionDetector) else None
        """Each camera's detector input size (`DetectorScale`); None: the model's for all."""
        self._scale_within_detector()
        self.tracked: dict[str, list[TrackedBox]] = {}
        """The camera trackers' output for the last completed frame, before anything was left out (a still object,
        a person not shown yet): what a recording of the identity layer's inputs needs (`identity_replay`)."""
        self.photometry: CropPhotometry = photometry if photometry is not None else AsRecorded()
        """What the identity descriptors see of each camera's colours (`crop_photometry`): learnt from every
        frame, applied to the identity embedder's crops (a tracker's own vectors stay within one camera)."""

    def export_state(self) -> bytes:
        """Everything this processor learnt (camera trackers, identity registry): a checkpoint's payload, so a
        task resumed on another worker keeps its track and global ids. Models are not part of it."""
        with self._lock:
            ahead = [i for i in self._before_detect if i > self._completed]
            before = self._before_detect[min(ahead)] if ahead else None
        gate, last, regions = (
            pickle.loads(before) if before is not None else (self.motion_gate, self._last_detections, self.regions)
        )
        state = (
            self.trackers, self.identities, self._described, gate, last, regions, self.photometry, self.still,
            self.scale,
        )  # fmt: skip
        saved = {"format": state_format(), "state": state}
        return zlib.compress(pickle.dumps(saved, protocol=pickle.HIGHEST_PROTOCOL), 1)

    def restore_state(self, blob: bytes) -> None:
        """Take over what ``export_state`` saved (from this deployment's own object store only: it is a
        pickle). A checkpoint written by another version of this code is refused (`CheckpointFormatError`)."""
        try:
            saved = pickle.loads(zlib.decompress(blob))
        except Exception as exc:  # a class it names is gone or changed shape
            raise CheckpointFormatError(f"the checkpoint cannot be read by this version: {exc}") from exc
        made_by, ours = saved.get("format") if isinstance(saved, dict) else "an older version", state_format()
        if made_by != ours:
            raise CheckpointFormatError(
                f"the checkpoint was written by other code (state format {made_by}, this worker {ours}):"
                " this version cannot resume it; start the task again"
            )
        trackers, identities, described, gate, last, regions, photometry, still, scale = saved["state"]
        if set(trackers) != set(self.trackers):
            raise ValueError(f"checkpoint has cameras {sorted(trackers)}, the task {sorted(self.trackers)}")
        self.trackers, self.identities, self._described = trackers, identities, described
        self.motion_gate, self._last_detections = gate, last
        if self.regions is not None and regions is not None:
            self.regions = regions  # where the detector looks next: a resumed task sees what it would have seen
        self.photometry = photometry  # the cameras' levels: a resumed task describes people as before
        if self.still is not None and still is not None:
            self.still = still  # the objects it found stay found
        if self.scale is not None and scale is not None:
            self.scale = scale  # each camera's input size, as learnt
            self._scale_within_detector()  # this worker's detector may take less than the one that learnt them

    def _scale_within_detector(self) -> None:
        """Never ask the detector for a larger input than it takes (a model file with a fixed input size)."""
        if self.scale is not None and self.scale.max_size is not None:
            assert isinstance(self.detector, RegionDetector)
            self.scale.max_size = max(self.scale.input_size, min(self.scale.max_size, self.detector.largest_input))

    def process(self, gf: GlobalFrame) -> FrameResult:
        return self.complete(gf, self.detect(gf))

    def detect(self, gf: GlobalFrame) -> DetectedFrame:
        """The detector on one global frame. Touches no tracking or identity state, so the next frame's detection
        can run while ``complete`` finishes this one (frames must still be detected in order: the motion gate
        compares each picture with the previous one)."""
        cams = [c for c in self.trackers if c in gf.frames]
        if self.motion_gate is not None or self.regions is not None:
            before = pickle.dumps((self.motion_gate, self._last_detections, self.regions), pickle.HIGHEST_PROTOCOL)
            with self._lock:
                self._before_detect[gf.index] = before
        t = time.perf_counter()
        detections = self._detect(cams, [gf.frames[c].image for c in cams])
        return DetectedFrame(gf.index, cams, detections, _lap(t))

    def complete(self, gf: GlobalFrame, detected: DetectedFrame) -> FrameResult:
        """Everything after detection — embed, track, map, identify — for frames in order."""
        if detected.index != gf.index:
            raise ValueError(f"detections of global frame {detected.index} given for frame {gf.index}")
        ms: dict[str, float] = {"detect": detected.ms}
        cams, detections = detected.cameras, detected.detections
        images = [gf.frames[c].image for c in cams]
        for cid, image in zip(cams, images, strict=True):
            self.photometry.observe(cid, image, gf.timestamp_s)

        # A tracker that uses appearance needs every detection described before it runs (with the cheap
        # tracker embedder when there is one); the identity registry's vectors are made after tracking, only
        # for the tracks it needs this frame, unless the trackers' vectors are the identity embedder's.
        t = time.perf_counter()
        appearance = any(self.trackers[c].uses_appearance for c in cams)
        det_emb: list[np.ndarray | None] = (
            list(self._embed(cams, images, detections, self.tracker_embedder or self.embedder))
            if appearance
            else [None] * len(cams)
        )
        reusable: list[np.ndarray | None] = det_emb if self.tracker_embedder is None else [None] * len(cams)
        ms["embed"] = _lap(t)

        t = time.perf_counter()
        per_cam = []
        for cid, image, det, emb in zip(cams, images, detections, det_emb, strict=True):
            self.tracked[cid] = tracked = self.trackers[cid].update(image, det, emb)
            tracks = tracked if self.still is None else self.still.people(
                cid, tracked, [Sighting(t.track_id, t.bbox_xyxy, t.det_index >= 0) for t in tracked],
                self.identities, gf.timestamp_s,
            )  # fmt: skip
            if self.scale is not None:  # the people it follows, not every detection (nor a still object's)
                found = np.asarray(det.boxes, np.float64).reshape(-1, 4)
                people = [found[tr.det_index] for tr in tracks if 0 <= tr.det_index < len(found)]
                self.scale.observe(cid, image.shape[:2], [float(b[3] - b[1]) for b in people])
            boxes = np.array([tr.bbox_xyxy for tr in tracks], np.float64).reshape(-1, 4)
            height = image.shape[0]
            per_cam.append((cid, tracks, self.homography.boxes_to_map(cid, boxes, height),
                            self.homography.boxes_sigma_m(cid, boxes, height)))  # fmt: skip
        ms["track"] = _lap(t)

        t = time.perf_counter()
        wanted = self._tracks_to_describe(gf.index, per_cam, detections)
        vectors = self._embed_wanted(cams, images, detections, reusable, wanted)
        ms["embed"] += _lap(t)

        t = time.perf_counter()
        observations: list[Observation] = []
        for ci, (cid, tracks, xy, sigma) in enumerate(per_cam):
            for tr, p, sd in zip(tracks, xy, sigma, strict=True):
                pos = (float(p[0]), float(p[1])) if np.all(np.isfinite(p)) else None
                observations.append(
                    Observation(
                        cid, tr.track_id, vectors.get((ci, tr.track_id)), pos, tr.confidence, tr.bbox_xyxy,
                        float(sd) if np.isfinite(sd) else None,
                    )
                )
        gids = self.identities.assign(observations, gf.timestamp_s)
        ms["reid"] = _lap(t)

        results: list[CameraResult] = []
        k = 0
        for (cid, tracks, _, _), image in zip(per_cam, images, strict=True):
            outs = []
            for tr in tracks:
                gid = gids[k]
                if gid is not None:  # None: a new person not shown yet (`reid_confirm_frames`)
                    where, seen = observations[k].map_xy, tr.det_index >= 0
                    outs.append(TrackOut(tr.track_id, gid, tr.bbox_xyxy, tr.confidence, where, seen))
                k += 1
            cf = gf.frames[cid]
            results.append(CameraResult(cid, cf.frame_index, cf.timestamp_s, outs, image))
        with self._lock:
            self._completed = gf.index
            self._before_detect = {i: b for i, b in self._before_detect.items() if i > gf.index}
        return FrameResult(gf.index, gf.timestamp_s, results, ms, self.identities.drain_events())

    def _detect(self, cams: list[str], images: list[ImageBGR]) -> list[Detections]:
        """The detector on every camera whose picture changed; the previous boxes where nothing moved; only
        around motion and people already found when a region planner is set."""
        if self.regions is not None and self.motion_gate is None:
            return self._detect_regions(cams, images)
        gate = self.motion_gate
        if gate is None:
            return self._look(cams, images) if images else []
        run = [i for i, (c, im) in enumerate(zip(cams, images, strict=True))
               if gate.needs_detection(c, im) or c not in self._last_detections]  # fmt: skip
        fresh = self._look([cams[i] for i in run], [images[i] for i in run]) if run else []
        for i, det in zip(run, fresh, strict=True):
            self._last_detections[cams[i]] = det
        return [self._last_detections[c] for c in cams]

    def _detect_regions(self, cams: list[str], images: list[ImageBGR]) -> list[Detections]:
        planner = self.regions
        assert planner is not None and isinstance(self.detector, RegionDetector)
        regions = [planner.regions(c, im) for c, im in zip(cams, images, strict=True)]
        found = self.detector.detect_regions(images, regions, self._input_sizes(cams))
        for c, det in zip(cams, found, strict=True):
            planner.detected(c, det)
        return found

    def _look(self, cams: list[str], images: list[ImageBGR]) -> list[Detections]:
        """Whole frames, each camera at its input size."""
        if self.scale is None:
            return self.detector.detect(images)
        assert isinstance(self.detector, RegionDetector)
        return self.detector.detect_regions(images, [None] * len(images), self._input_sizes(cams))

    def _input_sizes(self, cams: list[str]) -> list[int | None] | None:
        return None if self.scale is None else [self.scale.size(c) for c in cams]

    def _tracks_to_describe(
        self, frame_no: int, per_cam: list[tuple[str, list[TrackedBox], np.ndarray, np.ndarray]],
        detections: list[Detections],
    ) -> list[tuple[int, int, int]]:
        """(camera slot, track id, detection index) of tracks to embed now (`describe_now`). Counters of tracks not
        seen for a while are dropped."""
        wanted = []
        for ci, (cid, tracks, _, _) in enumerate(per_cam):
            for tr in tracks:
                if not 0 <= tr.det_index < len(detections[ci]):
                    continue
                key = (cid, tr.track_id)
                n, _ = self._described.get(key, (0, frame_no))
                wants = self.embed_first_n > 1 and self.identities.needs_looks(cid, tr.track_id)
                if describe_now(n, self.embed_first_n, self.embed_every_n, wants):
                    wanted.append((ci, tr.track_id, tr.det_index))
                self._described[key] = (n + 1, frame_no)
        if frame_no % 256 == 0:
            self._described = {k: v for k, v in self._described.items() if frame_no - v[1] < 1000}
        return wanted

    def _embed_wanted(
        self,
        cams: list[str],
        images: list[ImageBGR],
        detections: list[Detections],
        det_emb: list[np.ndarray | None],
        wanted: list[tuple[int, int, int]],
    ) -> dict[tuple[int, int], np.ndarray]:
        """Embeddings of the wanted tracks, keyed by (camera slot, track id); one batched call for all."""
        out: dict[tuple[int, int], np.ndarray] = {}
        todo: list[tuple[int, int]] = []
        crops: list[ImageBGR] = []
        for ci, tid, di in wanted:
            pre = det_emb[ci]
            if pre is not None:
                if np.any(pre[di]):
                    out[(ci, tid)] = pre[di]
                continue
            c, kept = crop_boxes(images[ci], detections[ci].boxes[di : di + 1])
            if kept:
                crops.extend(self.photometry.normalise(cams[ci], c))
                todo.append((ci, tid))
        if crops:
            for key, v in zip(todo, self.embedder.embed(crops), strict=True):
                out[key] = v
        return out

    def _embed(
        self,
        cams: list[str],
        images: list[ImageBGR],
        detections: list[Detections],
        embedder: AppearanceEmbedder,
    ) -> list[np.ndarray]:
        """One embedder call for every crop of every camera; rows of zeros for boxes too small to crop. The
        identity embedder's crops go through the crop photometry (its vectors are compared across cameras); a
        camera tracker's own vectors are compared within its camera, where its rendering is the same for everyone."""
        levelled = embedder is self.embedder
        all_crops: list[ImageBGR] = []
        slots: list[tuple[int, int]] = []
        for ci, (cid, image, det) in enumerate(zip(cams, images, detections, strict=True)):
            crops, kept = crop_boxes(image, det.boxes)
            all_crops.extend(self.photometry.normalise(cid, crops) if levelled else crops)
            slots.extend((ci, j) for j in kept)
        dim = embedder.dim
        out = [np.zeros((len(d), dim), np.float32) for d in detections]
        if all_crops:
            vecs = embedder.embed(all_crops)
            for (ci, j), v in zip(slots, vecs, strict=True):
                out[ci][j] = v
        return out


def _lap(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def encode_frame(
    encoder: FrameEncoder,
    global_frame_index: int,
    cam: CameraResult,
    quality: int,
    low_scale: float | None = None,
    low_quality: int = 50,
) -> EncodedFrame:
    """JPEG of one camera frame wrapped in its binary header; plus a light variant when ``low_scale``."""
    header = FrameHeader(cam.camera_id, global_frame_index, cam.frame_index, cam.timestamp_video_s)
    message = pack_frame(header, encoder.encode(cam.image, quality))
    low = None
    if low_scale is not None and 0 < low_scale < 1:
        h, w = cam.image.shape[:2]
        size = (max(1, int(w * low_scale)), max(1, int(h * low_scale)))
        small = cv2.resize(cam.image, size, interpolation=cv2.INTER_AREA)
        low = pack_frame(header, encoder.encode(np.ascontiguousarray(small), low_quality))
    return EncodedFrame(cam.camera_id, message, low)
