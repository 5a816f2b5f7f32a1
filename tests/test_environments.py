from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.services.environment_catalog import EnvironmentCatalog
from app.services.environments import EnvironmentError_, load_environment
from app.services.homography import CUT_BOX_ASPECT, HomographyService, apply_homography, foot_points
from tests.conftest import shared


def test_reads_dataset_format_with_exact_homographies() -> None:
    env = load_environment(shared("multiview-dev"))
    assert env.id == "pets-derived"
    assert list(env.cameras) == ["c1", "c2", "c3", "c4"]
    assert env.overlapping("c2", "c1") and len(env.overlaps) == 6
    assert env.map.pixels_per_meter == 20.0 and env.map.origin_m == (-21.0, -18.0)
    cam = env.cameras["c1"]
    assert cam.video.name == "c1.mp4" and cam.video.is_file()
    # matrix given: world metres through our composition equal the published image→world matrix
    raw = json.loads((shared("multiview-dev") / "environment.json").read_text())["cameras"][0]
    h_world = np.array(raw["image_to_world_homography_m"])
    pts = np.array([[100.0, 400.0], [320.0, 240.0], [600.0, 300.0]])
    np.testing.assert_allclose(
        apply_homography(env.image_to_metres("c1"), pts), apply_homography(h_world, pts), atol=1e-6
    )
    assert cam.reprojection_error_px is not None and cam.reprojection_error_px < 1e-2


def test_point_pairs_alone_are_solved(tmp_path: Path) -> None:
    raw = json.loads((shared("multiview-dev") / "environment.json").read_text())
    for c in raw["cameras"]:
        c.pop("image_to_map_homography")
        c.pop("image_to_world_homography_m")
        c["video"] = str(shared("multiview-dev") / c["video"])
    (tmp_path / "env.json").write_text(json.dumps(raw))
    env = load_environment(tmp_path / "env.json")
    ref = load_environment(shared("multiview-dev"))
    for cid in env.cameras:
        a = env.cameras[cid].image_to_map_px
        b = ref.cameras[cid].image_to_map_px
        np.testing.assert_allclose(a / a[2, 2], b / b[2, 2], rtol=1e-4, atol=1e-6)


def test_ground_truth_feet_land_on_world_positions() -> None:
    """Bottom-centres of GT boxes projected to metres agree with gt_world (README: mean 0.077 m)."""
    root = shared("multiview-dev")
    env = load_environment(root)
    hs = HomographyService(env)
    world = {(int(r[0]), int(r[1])): r[2:4] for r in np.loadtxt(root / "gt" / "gt_world.txt", delimiter=",")}
    errs = []
    for cid in env.cameras:
        gt = np.loadtxt(root / "gt" / f"gt_{cid}.txt", delimiter=",")
        boxes = np.stack([gt[:, 2], gt[:, 3], gt[:, 2] + gt[:, 4], gt[:, 3] + gt[:, 5]], axis=1)
        xy = hs.boxes_to_map(cid, boxes)
        for row, p in zip(gt, xy, strict=True):
            errs.append(np.linalg.norm(p - world[(int(row[0]), int(row[1]))]))
    assert np.mean(errs) < 0.12
    assert np.percentile(errs, 95) < 0.2


def test_people_cut_off_by_the_bottom_edge_land_near_where_they_stand() -> None:
    """A person walking out of view at the bottom: the box ends at the image edge, not at the feet. Simulated on
    whole ground-truth boxes cut by 25 % and 40 % (the image ending there): projecting the cut edge puts people
    metres short; extending the box to a whole person's shape puts them within a metre."""
    root = shared("multiview-dev")
    env = load_environment(root)
    world = {(int(r[0]), int(r[1])): r[2:4] for r in np.loadtxt(root / "gt" / "gt_world.txt", delimiter=",")}
    median = {}
    for aspect in (0.0, CUT_BOX_ASPECT):
        hs = HomographyService(env, cut_box_aspect=aspect)
        errs = []
        for cid, cam in env.cameras.items():
            gt = np.loadtxt(root / "gt" / f"gt_{cid}.txt", delimiter=",")[::5]
            boxes = np.stack([gt[:, 2], gt[:, 3], gt[:, 2] + gt[:, 4], gt[:, 3] + gt[:, 5]], axis=1)
            whole = (boxes[:, 1] > 2) & (boxes[:, 3] < cam.height - 2)
            for share in (0.25, 0.4):
                for row, (x1, y1, x2, y2) in zip(gt[whole], boxes[whole], strict=True):
                    edge = y2 - share * (y2 - y1)
                    xy = hs.boxes_to_map(cid, [[x1, y1, x2, edge]], image_height=edge)[0]
                    errs.append(np.linalg.norm(xy - world[(int(row[0]), int(row[1]))]))
        median[aspect] = float(np.median(errs))
    assert median[0.0] > 1.5  # measured 2.26 m
    assert median[CUT_BOX_ASPECT] < 0.8 and median[CUT_BOX_ASPECT] < 0.4 * median[0.0]  # measured 0.56 m


def test_only_boxes_at_the_bottom_edge_are_extended() -> None:
    boxes = [[100, 400, 140, 480], [100, 400, 140, 470], [100, 460, 140, 479]]
    feet = foot_points(boxes, image_height=480)
    assert feet[0].tolist() == [120, 400 + CUT_BOX_ASPECT * 40]  # cut off: where a whole box would end
    assert feet[1].tolist() == [120, 470]  # whole: its bottom
    assert feet[2].tolist() == [120, 460 + CUT_BOX_ASPECT * 40]
    assert foot_points(boxes)[0].tolist() == [120, 480]  # no image size: the bottom, as before
    assert foot_points([[100, 100, 140, 480]], 480)[0].tolist() == [120, 480]  # taller than a whole box: unchanged
    assert foot_points(boxes, 480, cut_box_aspect=0)[0].tolist() == [120, 480]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"cameras": []}, "cameras: List should have at least 1 item"),
        ({"map": {"pixels_per_meter": 10}}, "width_px"),
        ({"overlaps": [["c1", "nope"]]}, "unknown camera"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path: Path, patch: dict[str, object], message: str) -> None:
    raw = json.loads((shared("multiview-dev") / "environment.json").read_text())
    raw.update(patch)
    (tmp_path / "e.json").write_text(json.dumps(raw))
    with pytest.raises(EnvironmentError_, match=message):
        load_environment(tmp_path / "e.json")


def test_degenerate_point_pairs_rejected(tmp_path: Path) -> None:
    env = {
        "id": "x",
        "map": {"width_px": 100, "height_px": 100, "pixels_per_meter": 10},
        "cameras": [{"id": "a", "video": "a.mp4", "point_pairs": [[[0, 0], [0, 0]], [[1, 1], [1, 1]]]}],
    }
    (tmp_path / "e.json").write_text(json.dumps(env))
    with pytest.raises(EnvironmentError_, match="at least 4"):
        load_environment(tmp_path / "e.json")


def test_catalog_skips_broken_files_and_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    cat = EnvironmentCatalog.from_paths(tmp_path, [shared("multiview-dev"), shared("pets2009-s2l1")])
    assert sorted(e.id for e in cat.all()) == ["pets-derived", "pets2009-s2l1"]
    assert len(cat.errors) == 1 and "broken.json" in cat.errors[0]
