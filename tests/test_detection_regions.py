"""Looking only where people can be: NanoDet on windows of real PETS frames gives the boxes a full look gives,
the windows cover what they must, and the planner asks for full looks, people and motion as documented."""

from __future__ import annotations

import pickle
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.core.config import Settings
from app.models.base import Detections, RegionDetector
from app.models.nanodet import DEFAULT_MODEL_PATH, REGION_MARGIN, NanoDetDetector, region_windows
from app.services.checkpoint_format import CheckpointFormatError
from app.services.detection_regions import RegionPlanner
from app.services.frame_processor import FrameProcessor
from app.services.video_data_manager import CameraFrame, GlobalFrame
from tests.conftest import read_frames

PETS = Path(__file__).resolve().parents[1].parent / "shared/data/pets2009-s2l1"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    video = PETS / "vtest.avi"
    if not video.is_file():
        pytest.skip(f"{video} missing")
    return read_frames(video, range(30, 121, 30))


@pytest.fixture(scope="module")
def detector() -> NanoDetDetector:
    if not DEFAULT_MODEL_PATH.is_file():
        pytest.skip("app/assets/nanodet.onnx missing")
    return NanoDetDetector()


# -- windows on the network input -------------------------------------------------------------------------
def test_windows_cover_their_regions_on_the_stride_grid() -> None:
    scale, full = 0.54, (320, 416)  # a 768x576 frame
    rects = [(100.0, 200.0, 140.0, 300.0), (600.0, 50.0, 640.0, 150.0)]
    windows = region_windows(rects, scale, full)
    assert windows is not None and len(windows) == 2
    for (x1, y1, x2, y2), (wy0, wy1, wx0, wx1) in zip(rects, sorted(windows, key=lambda w: w[2]), strict=True):
        assert (wy1 - wy0) % 32 == 0 and (wx1 - wx0) % 32 == 0
        assert wy0 >= 0 and wy1 <= full[0] and wx0 >= 0 and wx1 <= full[1]
        assert wx0 <= max(0.0, x1 * scale - REGION_MARGIN) and wx1 >= min(full[1], x2 * scale + REGION_MARGIN)
        assert wy0 <= max(0.0, y1 * scale - REGION_MARGIN) and wy1 >= min(full[0], y2 * scale + REGION_MARGIN)


def test_overlapping_regions_become_one_window_and_most_of_the_frame_is_a_full_look() -> None:
    scale, full = 0.54, (320, 416)
    one = region_windows([(100.0, 200.0, 140.0, 300.0), (130.0, 220.0, 170.0, 320.0)], scale, full)
    assert one is not None and len(one) == 1
    assert region_windows([(0.0, 0.0, 700.0, 500.0)], scale, full) is None
    assert region_windows([], scale, full) == []


# -- the detector on windows ------------------------------------------------------------------------------
def test_windows_around_people_give_the_boxes_of_a_full_look(detector: NanoDetDetector, frames: list) -> None:
    assert isinstance(detector, RegionDetector)
    full = detector.detect(frames)
    around = detector.detect_regions(frames, [[tuple(b) for b in d.boxes.tolist()] for d in full])
    matched = total = 0
    for f, a in zip(full, around, strict=True):
        total += len(f)
        if len(f) and len(a):
            err = np.abs(f.boxes[:, None, :] - a.boxes[None, :, :]).max(axis=2).min(axis=1)
            matched += int((err <= 3.0).sum())
    assert total >= 20
    assert matched >= 0.9 * total, f"{matched} of {total} full-look boxes found again around themselves"


def test_none_is_a_full_look_and_an_empty_list_looks_nowhere(detector: NanoDetDetector, frames: list) -> None:
    full = detector.detect(frames[:2])
    same = detector.detect_regions(frames[:2], [None, []])
    np.testing.assert_array_equal(same[0].boxes, full[0].boxes)
    assert len(same[1]) == 0
    with pytest.raises(ValueError, match="region lists"):
        detector.detect_regions(frames[:2], [None])


def test_a_window_costs_less_input_than_the_frame(detector: NanoDetDetector, frames: list) -> None:
    person = [(300.0, 200.0, 340.0, 300.0)]
    (tile,) = detector._tiles_of(0, frames[0])
    windows = region_windows(person, tile.scale, (320, 416))
    assert windows is not None
    (y0, y1, x0, x1), = windows
    assert (y1 - y0) * (x1 - x0) < 0.25 * 320 * 416


# -- the planner --------------------------------------------------------------------------------------------
def test_planner_looks_fully_first_then_at_people_and_new_motion_then_fully_again() -> None:
    planner = RegionPlanner(full_every=4)
    still = np.full((480, 640, 3), 90, np.uint8)
    assert planner.regions("c1", still) is None  # first frame: a full look
    planner.detected("c1", Detections(np.array([[100, 100, 140, 200]], np.float32), np.array([0.9], np.float32)))
    regions = planner.regions("c1", still)
    assert regions is not None and len(regions) == 1  # nothing moved: the person already found, grown
    x1, y1, x2, y2 = regions[0]
    assert x1 < 100 and y1 < 100 and x2 > 140 and y2 > 200
    entering = still.copy()
    cv2.rectangle(entering, (500, 300), (540, 400), (250, 250, 250), -1)
    regions = planner.regions("c1", entering)
    assert regions is not None and len(regions) == 2
    mx1, my1, mx2, my2 = regions[1]
    assert mx1 <= 500 and my1 <= 300 and mx2 >= 540 and my2 >= 400
    assert planner.regions("c1", entering) is not None
    assert planner.regions("c1", entering) is None  # the 5th frame: a full look again (every 4)
    assert planner.regions("c2", still) is None  # cameras are independent
    assert planner.full_looks == 3 and planner.looks == 6


def test_settings_turn_regions_on() -> None:
    assert RegionPlanner.from_settings(Settings(detect_regions=False)) is None
    planner = RegionPlanner.from_settings(Settings(detect_regions=True, detect_regions_full_every=5))
    assert planner is not None and planner.full_every == 5
    with pytest.raises(ValueError):
        RegionPlanner(full_every=0)


# -- in the pipeline -----------------------------------------------------------------------------------------
def test_the_pipeline_with_regions_tracks_the_people_a_full_look_tracks(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.evaluation.tracking_eval import load_dataset, run_pipeline

    folder = PETS.parent / "multiview-dev"
    if not (folder / "environment.json").is_file() or not DEFAULT_MODEL_PATH.is_file():
        pytest.skip("multiview-dev or the NanoDet model missing")
    dataset = load_dataset(folder)
    looks: list[int] = []
    real = NanoDetDetector.detect_regions

    def counted(self: NanoDetDetector, images: list, regions: list, sizes: list | None = None) -> list[Detections]:
        looks.extend(0 if r is None else 1 for r in regions)  # 1: a look at windows only
        return real(self, images, regions, sizes)

    monkeypatch.setattr(NanoDetDetector, "detect_regions", counted)
    full = run_pipeline(dataset, Settings(detect_regions=False), max_frames=24)
    assert sum(looks) == 0
    regions = run_pipeline(dataset, Settings(detect_regions=True), max_frames=24)
    windowed = looks[len(looks) // 2 :]
    assert 0 < sum(windowed) < len(windowed)  # some looks at windows, some full (the first, every 8th)
    for cam in dataset.env.cameras:
        n_full, n_regions = len(full.track_rows[cam]), len(regions.track_rows[cam])
        assert abs(n_full - n_regions) <= max(3, 0.1 * n_full), (cam, n_full, n_regions)


def _planning_processor(detector: NanoDetDetector) -> tuple[FrameProcessor, str]:
    """A one-camera PETS processor that plans where to detect (regions), and its camera."""
    from app.evaluation.tracking_eval import load_dataset
    from app.models.registry import build_embedder
    from app.services.homography import HomographyService
    from app.services.identity import IdentityRegistry
    from app.services.tracking import BotSortCameraTracker

    env = load_dataset(PETS).env
    (cam,) = env.cameras
    embedder = build_embedder(Settings(embedder="part_colour"))
    processor = FrameProcessor(
        detector=detector, embedder=embedder, trackers={cam: BotSortCameraTracker(7.0, camera_id=cam)},
        homography=HomographyService(env), identities=IdentityRegistry(embedder.dim), regions=RegionPlanner(),
    )  # fmt: skip
    return processor, cam


def test_a_checkpoint_taken_while_the_next_frame_is_detected_ahead_plans_as_before_it(
    detector: NanoDetDetector, frames: list
) -> None:
    """Unpaced tasks detect frame g+1 while g is completed; a checkpoint after g must carry the planner as it
    was before g+1's detection, or the task resumed from it plans g+1 from what it already saw there."""
    processor, cam = _planning_processor(detector)
    gfs = [GlobalFrame(i, i / 7, {cam: CameraFrame(cam, i, i / 7, im)}) for i, im in enumerate(frames[:2])]
    processor.process(gfs[0])
    before = pickle.dumps(processor.regions)
    ahead = processor.detect(gfs[1])  # while frame 0 is finishing, as an unpaced task does
    assert pickle.dumps(processor.regions) != before
    saved = pickle.loads(zlib.decompress(processor.export_state()))["state"]
    assert pickle.dumps(saved[5]) == before
    processor.complete(gfs[1], ahead)  # once frame 1 is complete, a checkpoint carries the planner after it
    after = pickle.loads(zlib.decompress(processor.export_state()))["state"][5]
    assert pickle.dumps(after) == pickle.dumps(processor.regions)


def test_a_checkpoint_of_other_code_is_refused_before_anything_runs(detector: NanoDetDetector, frames: list) -> None:
    """Pickle restores objects whose classes changed shape without complaint (and the task fails frames later on
    a missing field): a checkpoint names the code that wrote it, and another version's is refused up front."""
    processor, cam = _planning_processor(detector)
    processor.process(GlobalFrame(0, 0.0, {cam: CameraFrame(cam, 0, 0.0, frames[0])}))
    blob = processor.export_state()
    processor.restore_state(blob)  # this version's own: taken over
    other = pickle.loads(zlib.decompress(blob)) | {"format": "0123456789abcdef"}
    older = pickle.loads(zlib.decompress(blob))["state"]  # before checkpoints named their format
    for foreign in (other, older):
        with pytest.raises(CheckpointFormatError, match="start the task again"):
            processor.restore_state(zlib.compress(pickle.dumps(foreign)))
    with pytest.raises(CheckpointFormatError, match="cannot be read"):
        processor.restore_state(zlib.compress(b"\x80\x05not a pickle"))
