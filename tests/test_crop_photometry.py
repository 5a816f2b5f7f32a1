"""Each camera's colour rendering undone before crops are described: one real PETS frame shown through two
cameras with different white balance, contrast and exposure gives one person near-equal descriptors only once
each camera's levels are stretched; the frames that are streamed are never changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.config import Settings
from app.models.base import FloatArray, ImageBGR
from app.models.part_colour import PartColourEmbedder
from app.services.crop_photometry import AsRecorded, LevelsStretch, build_crop_photometry
from tests.conftest import read_frames

DATA = Path(__file__).resolve().parents[1].parent / "shared/data"
PETS = DATA / "pets2009-s2l1"
MULTIVIEW = DATA / "multiview-dev"
needs_pets = pytest.mark.skipif(not (PETS / "vtest.avi").is_file(), reason="shared PETS data missing")


def _render(image: ImageBGR, gains_bgr: tuple[float, float, float], contrast: float, offset: float) -> ImageBGR:
    """The same scene through another camera: per-channel gains (white balance), contrast about mid-grey and a
    brightness offset — as the derived cameras of the test sets render their pixels (here a warm, flat one)."""
    x = image.astype(np.float32) * np.asarray(gains_bgr, np.float32)
    x = (x - 128.0) * contrast + 128.0 + offset
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def scene() -> tuple[list[ImageBGR], list[tuple[int, int, int, int]]]:
    """Ten PETS frames a second apart, and the people boxes of the last one (ground truth, tall enough)."""
    frames = read_frames(PETS / "vtest.avi", range(7, 71, 7))
    boxes = []
    for line in (PETS / "gt" / "gt_c1.txt").read_text().splitlines():
        f, _, x, y, w, h = (float(v) for v in line.split(",")[:6])
        if int(f) == 70 and h >= 60:
            boxes.append((int(x), int(y), int(x + w), int(y + h)))
    assert len(boxes) >= 3
    return frames, boxes


def _describe(photometry: LevelsStretch | AsRecorded, camera: str, frame: ImageBGR, boxes: list) -> FloatArray:
    crops = [frame[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes]
    return PartColourEmbedder().embed(photometry.normalise(camera, crops))


def _same_person_cosines(photometry: LevelsStretch | AsRecorded, pairs: list, boxes: list) -> np.ndarray:
    """Each person of the last frame against themselves through the other camera, after both cameras' frames."""
    for i, (a, b) in enumerate(pairs):
        photometry.observe("a", a, float(i))
        photometry.observe("b", b, float(i))
    va = _describe(photometry, "a", pairs[-1][0], boxes)
    vb = _describe(photometry, "b", pairs[-1][1], boxes)
    return np.sum(va * vb, axis=1)


@needs_pets
def test_one_person_through_two_renderings_looks_the_same_once_levels_are_stretched(scene) -> None:  # type: ignore[no-untyped-def]
    frames, boxes = scene
    pairs = [(f, _render(f, (1.1, 1.0, 0.9), 0.85, 10.0)) for f in frames]
    levels_same = _same_person_cosines(LevelsStretch(), pairs, boxes)
    raw_same = _same_person_cosines(AsRecorded(), pairs, boxes)
    assert np.all(levels_same > 0.95), levels_same
    assert np.mean(levels_same) > np.mean(raw_same) + 0.1, (levels_same, raw_same)


@needs_pets
def test_levels_follow_the_camera_not_the_people(scene) -> None:  # type: ignore[no-untyped-def]
    """The stretch maps each channel's extremes of the camera's frames to black and white: the darkest 0.5 % of
    pixels end at 0, the brightest at 255, and a frame is sampled at most once per second of video."""
    frames, _ = scene
    levels = LevelsStretch(clip_pct=0.5, sample_every_s=1.0)
    dim = _render(frames[0], (0.8, 0.9, 0.7), 0.7, -20.0)
    levels.observe("c", dim, 0.0)
    levels.observe("c", np.zeros_like(dim), 0.5)  # within the second: not sampled
    out = levels.normalise("c", [dim])[0]
    for c in range(3):
        lo, hi = np.percentile(out[..., c], [0.5, 99.5])
        raw_lo, raw_hi = np.percentile(dim[..., c], [0.5, 99.5])
        assert lo <= 3 and hi >= 250, (c, lo, hi)
        assert raw_hi - raw_lo < 200
    assert out.shape == dim.shape and out.dtype == np.uint8


def test_a_flat_picture_and_an_unseen_camera_are_left_as_they_are() -> None:
    levels = LevelsStretch()
    grey = np.full((48, 64, 3), 120, np.uint8)
    grey[::7, ::5] = 126  # a nearly flat test picture: stretching it would only blow up noise
    levels.observe("flat", grey, 0.0)
    assert np.array_equal(levels.normalise("flat", [grey])[0], grey)
    assert levels.normalise("never-seen", [grey])[0] is grey
    assert levels.normalise("flat", [np.zeros((0, 5, 3), np.uint8)])[0].size == 0


def test_settings_choose_the_stage_and_bad_values_are_refused() -> None:
    assert Settings().crop_photometry == "levels"
    assert isinstance(build_crop_photometry("levels"), LevelsStretch)
    assert isinstance(build_crop_photometry("none"), AsRecorded)
    with pytest.raises(ValueError, match="unknown crop photometry"):
        build_crop_photometry("auto-exposure")
    with pytest.raises(ValueError, match="clip_pct"):
        LevelsStretch(clip_pct=60.0)
    with pytest.raises(ValueError):
        Settings(crop_levels_clip_pct=-1.0)


class _Keeping:
    """An embedder keeping every crop it is given."""

    def __init__(self) -> None:
        self.inner = PartColourEmbedder()
        self.dim = self.inner.dim
        self.info = self.inner.info
        self.crops: list[ImageBGR] = []

    def embed(self, crops: list[ImageBGR]) -> FloatArray:
        self.crops.extend(c.copy() for c in crops)
        return self.inner.embed(crops)

    def warmup(self) -> None:
        self.inner.warmup()


@pytest.mark.skipif(not (MULTIVIEW / "environment.json").is_file(), reason="shared multiview data missing")
def test_the_pipeline_describes_levelled_crops_and_streams_the_frames_untouched() -> None:
    """Identity vectors (compared across cameras) see levelled crops; a camera tracker's own vectors, compared
    within one camera, see the crops as recorded."""
    from app.models.registry import build_detector
    from app.services.environments import load_environment
    from app.services.frame_processor import FrameProcessor, crop_boxes
    from app.services.homography import HomographyService
    from app.services.reid import IdentityRegistry
    from app.services.tracking import CameraTrackerFactory
    from app.services.video_data_manager import SynchronizedReader, VideoDataManagerService

    s = Settings()
    env = load_environment(MULTIVIEW)
    keeping, tracker_keeping = _Keeping(), _Keeping()
    factory = CameraTrackerFactory(s)
    processor = FrameProcessor(
        detector=build_detector(s),
        embedder=keeping,  # type: ignore[arg-type]
        trackers={cid: factory.create(cid, 7.0) for cid in env.cameras},
        homography=HomographyService(env),
        identities=IdentityRegistry.from_settings(s, keeping.dim, env),
        tracker_embedder=tracker_keeping,  # type: ignore[arg-type]
        photometry=build_crop_photometry(s.crop_photometry, s.crop_levels_clip_pct),
    )
    reader = SynchronizedReader(VideoDataManagerService(s).open(list(env.cameras.values())), read_ahead=2)
    reader.start()
    try:
        gf = reader.get()
        assert gf is not None
        originals = {cid: f.image.copy() for cid, f in gf.frames.items()}
        result = processor.process(gf)
    finally:
        reader.close()
    assert keeping.crops, "no crop was described"
    for cam in result.cameras:
        assert np.array_equal(cam.image, originals[cam.camera_id])  # what is streamed is what the camera sent
    # every described crop is a detection's crop with its camera's levels, none as the camera rendered it
    cams = list(originals)
    detections = processor.detector.detect([originals[c] for c in cams])
    levelled, raw = [], []
    for cid, det in zip(cams, detections, strict=True):
        crops, _ = crop_boxes(originals[cid], det.boxes)
        raw.extend(crops)
        levelled.extend(processor.photometry.normalise(cid, crops))

    def found(crop: ImageBGR, pool: list[ImageBGR]) -> bool:
        return any(crop.shape == p.shape and np.array_equal(crop, p) for p in pool)

    assert all(found(k, levelled) for k in keeping.crops)
    assert not any(found(k, raw) for k in keeping.crops)
    assert tracker_keeping.crops and all(found(k, raw) for k in tracker_keeping.crops)

    # a task resumed from a checkpoint describes people with the levels it had learnt, not from scratch
    resumed = FrameProcessor(
        detector=processor.detector,
        embedder=keeping,  # type: ignore[arg-type]
        trackers={cid: factory.create(cid, 7.0) for cid in env.cameras},
        homography=HomographyService(env),
        identities=IdentityRegistry.from_settings(s, keeping.dim, env),
        photometry=build_crop_photometry("levels"),
    )
    crop = raw[0]
    cid = cams[0]
    assert resumed.photometry.normalise(cid, [crop])[0] is crop  # nothing learnt yet
    resumed.restore_state(processor.export_state())
    assert np.array_equal(resumed.photometry.normalise(cid, [crop])[0], processor.photometry.normalise(cid, [crop])[0])
    assert not np.array_equal(resumed.photometry.normalise(cid, [crop])[0], crop)
