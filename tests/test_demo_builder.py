"""The demo's own data: Tsai calibration of PETS2009 View_001, the 4-camera demo builder, the video source.

Real data only (``shared/data`` next to the repository; skipped where absent). The opencv-doc download is
not exercised here (96 MB from a package mirror); the explicit-file and cached paths are.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from app.demo import build_demo
from app.demo.pets_calibration import VIEW_001, apply_homography
from app.demo.video_source import DemoVideoError, DemoVideoParams, obtain_demo_video
from app.services.environments import load_environment

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PETS = SHARED / "pets2009-s2l1"
VTEST = PETS / "vtest.avi"
DEMO_FRAMES = 30

pytestmark = pytest.mark.skipif(not VTEST.is_file(), reason=f"test data not found: {PETS}")


Points = npt.NDArray[np.float64]


def _gt_feet(max_frame: int | None = None) -> tuple[Points, Points, Points]:
    """Raw View_001 foot and head points (bottom/top centre of the GT boxes) and the GT positions in metres."""
    boxes = np.loadtxt(PETS / "gt" / "gt_c1.txt", delimiter=",", ndmin=2)
    world_rows = np.loadtxt(PETS / "gt" / "gt_world.txt", delimiter=",", ndmin=2)
    world = {(int(r[0]), int(r[1])): r[2:4] for r in world_rows}
    if max_frame is not None:
        boxes = boxes[boxes[:, 0] <= max_frame]
    feet = np.column_stack([boxes[:, 2] + boxes[:, 4] / 2.0, boxes[:, 3] + boxes[:, 5]])
    heads = np.column_stack([boxes[:, 2] + boxes[:, 4] / 2.0, boxes[:, 3]])
    truth = np.array([world[(int(r[0]), int(r[1]))] for r in boxes])
    return feet, heads, truth


# --- Tsai calibration -----------------------------------------------------------------------------------


def test_camera_centre_matches_published_value() -> None:
    np.testing.assert_allclose(VIEW_001.centre_m, [-28.94, -19.529, 7.066], atol=2e-3)
    np.testing.assert_allclose(VIEW_001.rotation @ VIEW_001.rotation.T, np.eye(3), atol=1e-12)


def test_undistorted_ground_homography_reproduces_gt_world() -> None:
    feet, _, truth = _gt_feet()
    err = np.linalg.norm(VIEW_001.image_to_world_m(feet) - truth, axis=1)
    # Measured: mean 3.8e-5 m, max 7.0e-5 m over 2396 GT foot points (gt_world.txt is rounded to 0.1 mm).
    assert len(err) > 2000
    assert err.mean() < 0.005
    assert err.max() < 0.01
    # Without undistortion the same homography is visibly off (measured mean 0.072 m, max 0.45 m).
    raw = np.linalg.norm(apply_homography(VIEW_001.image_to_world_homography_m(), feet) - truth, axis=1)
    assert raw.mean() > 0.05


def test_distortion_inverts_undistortion() -> None:
    u, v = np.meshgrid(np.linspace(0, 767, 40), np.linspace(0, 575, 30))
    pts = np.stack([u, v], axis=-1)
    np.testing.assert_allclose(VIEW_001.distort_points(VIEW_001.undistort_points(pts)), pts, atol=1e-6)
    # The distortion is real: the image corners move by several pixels.
    assert np.abs(VIEW_001.undistort_points(np.array([[0.0, 0.0]])) - [0.0, 0.0]).max() > 5.0


# --- the demo builder -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "env"
    return build_demo.build_demo_environment(VTEST, out, max_frames=DEMO_FRAMES)


def test_demo_environment_loads(demo_dir: Path) -> None:
    env = load_environment(demo_dir)
    assert env.id == "demo-pets-4cam"
    assert sorted(env.cameras) == ["c1", "c2", "c3", "c4"]
    assert env.map.pixels_per_meter == 20.0
    assert env.map.image is not None and env.map.image.is_file()
    map_png = cv2.imread(str(env.map.image))
    assert map_png is not None and map_png.shape == (540, 600, 3)
    raw = json.loads((demo_dir / "environment.json").read_text())
    assert raw["fps"] == 7.0 and raw["num_frames"] == DEMO_FRAMES and raw["first_frame"] == 1
    # Every pair of cameras shares ground (that is how the views were chosen).
    assert len(env.overlaps) == 6
    for cam in env.cameras.values():
        assert cam.fps == 7.0 and (cam.width, cam.height) == (640, 480)
        # point_pairs reproduce the published matrix (the loader solves them to report the error).
        assert cam.reprojection_error_px is not None and cam.reprojection_error_px < 0.01
        assert 8 <= len(raw["cameras"][int(cam.id[1]) - 1]["point_pairs"]) <= 10
        cap = cv2.VideoCapture(str(cam.video))
        frames = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            assert frame.shape == (480, 640, 3)
            frames += 1
        cap.release()
        assert frames == DEMO_FRAMES


def test_demo_views_map_gt_people_to_gt_world(demo_dir: Path) -> None:
    """GT foot points → undistorted View_001 → each view (H_k) → the environment's image→metres."""
    env = load_environment(demo_dir)
    raw = json.loads((demo_dir / "environment.json").read_text())
    feet, heads, truth = _gt_feet(DEMO_FRAMES)
    undistorted = VIEW_001.undistort_points(feet)
    heads_und = VIEW_001.undistort_points(heads)
    for cam in raw["cameras"]:
        h_k = np.asarray(cam["source"]["view001_undistorted_to_view_homography"])
        view = apply_homography(h_k, undistorted)
        inside = (view[:, 0] >= 0) & (view[:, 0] < 640) & (view[:, 1] >= 0) & (view[:, 1] < 480)
        assert inside.sum() >= 20, cam["id"]
        metres = apply_homography(env.image_to_metres(cam["id"]), view[inside])
        err = np.linalg.norm(metres - truth[inside], axis=1)
        assert err.max() < 0.05, (cam["id"], err.max())
        # people are big enough to detect: foot-to-head of the GT boxes in the view
        heights = np.linalg.norm(apply_homography(h_k, heads_und) - view, axis=1)[inside]
        assert np.median(heights) >= 40, cam["id"]


def test_build_is_idempotent_and_force_rebuilds(tmp_path: Path) -> None:
    out = tmp_path / "env"
    build_demo.build_demo_environment(VTEST, out, max_frames=3)
    env_file = out / "environment.json"
    first = env_file.stat().st_mtime_ns
    t0 = time.monotonic()
    build_demo.build_demo_environment(VTEST, out, max_frames=3)
    assert time.monotonic() - t0 < 1.0
    assert env_file.stat().st_mtime_ns == first
    build_demo.build_demo_environment(VTEST, out, max_frames=3, force=True)
    assert env_file.stat().st_mtime_ns != first
    info = json.loads(env_file.read_text())["build_info"]
    assert info["builder_version"] == build_demo.BUILDER_VERSION and info["max_frames"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_photometry_is_deterministic() -> None:
    cam = build_demo.CAMERAS[0]
    frame = np.full((480, 640, 3), 128, dtype=np.uint8)
    a = build_demo._Look(cam.photometry, cam.seed).apply(frame, 7)
    b = build_demo._Look(cam.photometry, cam.seed).apply(frame, 7)
    c = build_demo._Look(cam.photometry, cam.seed).apply(frame, 8)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# --- video source ---------------------------------------------------------------------------------------


def test_demo_video_setting_pointing_nowhere_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.avi"
    with pytest.raises(DemoVideoError, match="SPOTON_DEMO_VIDEO"):
        obtain_demo_video(DemoVideoParams(data_dir=tmp_path, demo_video=missing))


def test_demo_video_setting_is_used(tmp_path: Path) -> None:
    from app.core.config import Settings

    settings = Settings(data_dir=tmp_path, demo_video=VTEST)
    assert obtain_demo_video(settings) == VTEST
    assert not (tmp_path / "demo").exists()


def test_cached_demo_video_is_reused(tmp_path: Path) -> None:
    cached = tmp_path / "demo" / "source" / "vtest.avi"
    cached.parent.mkdir(parents=True)
    shutil.copyfile(VTEST, cached)
    assert obtain_demo_video(DemoVideoParams(data_dir=tmp_path)) == cached
