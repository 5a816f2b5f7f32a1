"""Things the detector takes for people that never move are left out; people, standing or walking, are not.

The real case: NanoDet fires on a sprinkler on the grass of the PETS scene (score ≈ 0.6) in a narrow view of
multiview-val's c3 — the same pixels, frame after frame, so BoT-SORT keeps it as a "person" for the whole task."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.config import Settings
from app.evaluation.tracking_eval import load_dataset
from app.models.nanodet import NanoDetDetector
from app.models.registry import build_embedder
from app.services.frame_processor import FrameProcessor
from app.services.homography import HomographyService
from app.services.identity import IdentityRegistry, Observation
from app.services.identity.events import IdentityEventKind
from app.services.still_objects import Sighting, StillObjects
from app.services.tracking import BotSortCameraTracker
from app.services.video_data_manager import CameraFrame, GlobalFrame
from tests.conftest import read_frames, shared

FPS = 7.0


def _box(x: float, y: float, w: float = 30.0, h: float = 64.0) -> tuple[float, float, float, float]:
    return (x, y, x + w, y + h)


def test_a_box_that_never_moves_is_left_out_after_the_wait_and_its_spot_is_remembered() -> None:
    still = StillObjects(after_s=5.0, min_iou=0.9)
    rng = np.random.default_rng(0)
    kept, found = [], []
    for i in range(50):  # 7 s; half a pixel of jitter, as a codec gives a still thing
        x, y = 285 + rng.uniform(-0.5, 0.5), 415 + rng.uniform(-0.5, 0.5)
        s = still.screen("c3", [Sighting(1, _box(x, y), True)], i / FPS)
        kept.append(s.keep[0])
        found += s.found
    first_hidden = kept.index(False)
    assert all(kept[:first_hidden]) and not any(kept[first_hidden:])
    assert first_hidden / FPS == pytest.approx(5.0, abs=1 / FPS)
    assert found == [1]  # reported once, when it is found
    assert len(still.spots("c3")) == 1
    # the same thing picked up again by a new track (after the tracker lost it) is never reported
    s = still.screen("c3", [Sighting(7, _box(285.3, 415.2), True)], 60 / FPS)
    assert s.keep == [False] and s.found == []


def test_people_standing_or_walking_stay_and_a_thing_that_starts_moving_comes_back() -> None:
    still = StillObjects(after_s=5.0, min_iou=0.9)
    rng = np.random.default_rng(1)
    for i in range(100):  # 14 s
        t = i / FPS
        sway = 6.0 * np.sin(i / 3.0)  # someone standing: shifts a few pixels, bends, turns
        stander = Sighting(1, _box(100 + sway, 200 + rng.uniform(-2, 2), 50 + rng.uniform(-4, 4), 130), True)
        walker = Sighting(2, _box(10 + 4 * i, 100), True)
        s = still.screen("c1", [stander, walker], t)
        assert s.keep == [True, True], f"frame {i}"
    assert still.spots("c1") == []
    # a still thing that later moves is reported again (someone who stood perfectly still walks off)
    for i in range(40):
        still.screen("c1", [Sighting(3, _box(300, 300), True)], 20 + i / FPS)
    assert still.screen("c1", [Sighting(3, _box(300, 300), True)], 26.0).keep == [False]
    assert still.screen("c1", [Sighting(3, _box(320, 300), True)], 26.2).keep == [True]


def test_predicted_boxes_neither_prove_stillness_nor_movement() -> None:
    """Between detections the tracker's box is its own prediction: it says nothing about the thing."""
    still = StillObjects(after_s=1.0, min_iou=0.9)
    still.screen("c1", [Sighting(1, _box(0, 0), True)], 0.0)
    assert still.screen("c1", [Sighting(1, _box(40, 0), False)], 0.5).keep == [True]  # drifting prediction
    s = still.screen("c1", [Sighting(1, _box(0, 0), True)], 1.2)
    assert s.keep == [False] and s.found == [1]


def test_settings_and_bad_values() -> None:
    assert StillObjects.from_settings(Settings(still_object_after_s=0)) is None
    made = StillObjects.from_settings(Settings())
    assert made is not None and made.after_s == 5.0 and made.min_iou == 0.9
    for kwargs in ({"after_s": 0.0}, {"min_iou": 1.0}, {"min_iou": 0.0}, {"spots_per_camera": 0}):
        with pytest.raises(ValueError):
            StillObjects(**kwargs)  # type: ignore[arg-type]


def test_a_discarded_track_takes_its_identity_with_it_unless_another_track_carries_it() -> None:
    registry = IdentityRegistry(4)
    a = registry.assign([Observation("c1", 1, None, (0.0, 0.0), 0.6, _box(0, 0))], 0.0)[0]
    b = registry.assign(
        [Observation("c1", 1, None, (0.0, 0.0), 0.6, _box(0, 0)), Observation("c1", 2, None, (5.0, 5.0), 0.9)], 0.2
    )[1]
    registry.drain_events()
    registry.discard_track("c1", 1, 0.4)
    registry.assign([Observation("c1", 2, None, (5.1, 5.0), 0.9)], 0.4)
    events = registry.drain_events()
    assert [(e.kind, e.global_id) for e in events] == [(IdentityEventKind.LOST, a)]
    assert registry.position(a) is None and registry.active_identities == 1
    # a person seen by two cameras: one camera's track turning out to be a thing leaves the person as they are
    registry.assign(
        [Observation("c1", 2, None, (5.2, 5.0), 0.9), Observation("c2", 9, None, (5.2, 5.05), 0.9)], 0.6
    )
    registry.discard_track("c2", 9, 0.8)
    assert registry.assign([Observation("c1", 2, None, (5.3, 5.0), 0.9)], 0.8) == [b]
    assert [e.kind for e in registry.drain_events()] == [IdentityEventKind.MATCHED]  # c2's track, at 0.6


def _processor(detector: NanoDetDetector, dataset: str, cam: str) -> FrameProcessor:
    env = load_dataset(shared(dataset)).env
    embedder = build_embedder(Settings(embedder="part_colour"))
    return FrameProcessor(
        detector=detector, embedder=embedder, trackers={cam: BotSortCameraTracker(FPS, camera_id=cam)},
        homography=HomographyService(env), identities=IdentityRegistry(embedder.dim), still=StillObjects(),
    )  # fmt: skip


def test_the_pipeline_stops_reporting_a_sprinkler_taken_for_a_person(nanodet: NanoDetDetector) -> None:
    """multiview-val c3, frame 300, its right 384 columns (as the n6-val view): nobody there but the sprinkler,
    which NanoDet scores ≈ 0.6. Played as a still picture for 8 s, it is reported at first, then no more, and
    its id is reported lost."""
    (image,) = read_frames(shared("multiview-val", "c3.mp4"), [300])
    image = np.ascontiguousarray(image[:, 256:640])
    processor = _processor(nanodet, "multiview-val", "c3")
    reported, events = [], []
    for i in range(56):
        r = processor.process(GlobalFrame(i, i / FPS, {"c3": CameraFrame("c3", i, i / FPS, image)}))
        (cam,) = r.cameras
        reported.append([t.global_id for t in cam.tracks])
        assert len(processor.tracked["c3"]) <= 1  # the tracker still follows it
        events += r.identity_events
    shown = [i for i, ids in enumerate(reported) if ids]
    assert shown and shown[-1] < 5 * FPS + 2, "reported after the wait"
    assert not any(reported[40:])
    (gid,) = {g for ids in reported for g in ids}
    kinds = [(e.kind, e.global_id) for e in events]
    assert (IdentityEventKind.CREATED, gid) in kinds and (IdentityEventKind.LOST, gid) in kinds
    assert len(processor.still.spots("c3")) == 1  # type: ignore[union-attr]


def test_the_pipeline_keeps_reporting_a_person_who_stands_still(nanodet: NanoDetDetector) -> None:
    """multiview-val c1, frames 34–110: a person stands and talks for 11 s (their box keeps an IoU above 0.7 with
    where it started for 5 s, the stillest person of the labelled sets); they are reported all along."""
    numbers = list(range(34, 111))
    frames = read_frames(shared("multiview-val", "c1.mp4"), numbers)
    processor = _processor(nanodet, "multiview-val", "c1")
    for i, image in enumerate(frames):
        r = processor.process(GlobalFrame(i, i / FPS, {"c1": CameraFrame("c1", i, i / FPS, image)}))
        (cam,) = r.cameras
        if i >= 3:
            assert {t.track_id for t in cam.tracks} == {t.track_id for t in processor.tracked["c1"]}, f"frame {i}"
    assert processor.still is not None and processor.still.spots("c1") == []
