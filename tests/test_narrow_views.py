"""The narrow-view re-entry set: real pixels and ground truth of a labelled set, with blind areas between views."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.cli import main
from app.evaluation.narrow_views import Window, clip_rows, count_reentries, derive
from app.evaluation.tracking_eval import DatasetError, load_dataset
from app.services.homography import apply_homography
from tests.conftest import shared


def test_clip_rows_keeps_mostly_visible_boxes_clipped_and_shifted() -> None:
    rows = np.array([[1, 1, 100, 10, 40, 80], [1, 2, 300, 10, 40, 80], [1, 3, 330, 10, 40, 80]], np.float64)
    out = clip_rows(rows, Window(0, 320), min_visible=0.5)
    assert out[:, 1].tolist() == [1, 2]  # box 3 is 75 % outside
    assert out[1, 2] == 300 and out[1, 4] == 20  # box 2 clipped at the window's edge
    right = clip_rows(rows, Window(320, 640), min_visible=0.5)
    assert right[:, 1].tolist() == [2, 3]  # box 2 is half inside this window too
    assert right[:, 2].tolist() == [0, 10] and right[:, 4].tolist() == [20, 40]


def test_count_reentries_needs_a_gap_in_every_camera() -> None:
    a = np.array([[f, 1, 0, 0, 1, 1] for f in [*range(1, 10), *range(30, 40)]], np.float64)
    b = np.array([[f, 1, 0, 0, 1, 1] for f in range(12, 20)], np.float64)
    assert count_reentries([a], gap_frames=14) == (1, 1)
    assert count_reentries([a, b], gap_frames=14) == (0, 1)  # camera b saw the person in between


def test_derived_set_has_re_entries_and_consistent_geometry(tmp_path: Path) -> None:
    src = shared("multiview-dev")
    out = tmp_path / "narrow"
    plan = derive(src, out)
    assert plan.reentries >= 10 and plan.people == 10  # the source has none
    env = json.loads((out / "environment.json").read_text())
    assert env["id"].endswith("-narrow") and "re-entries" in env["description"]
    ds = load_dataset(out)
    original = load_dataset(src)
    for cid, cam in ds.env.cameras.items():
        win = plan.windows[cid]
        assert cam.width == win.x1 - win.x0 == 320
        cap = cv2.VideoCapture(str(out / f"{cid}.mp4"))
        ok, frame = cap.read()
        cap.release()
        assert ok and frame.shape[:2] == (480, 320)
        rows = ds.gt[cid]
        assert rows[:, 2].min() >= 0 and (rows[:, 2] + rows[:, 4]).max() <= 320 + 1e-6
        # an unclipped box stands on the same ground spot through the shifted homography
        full = original.gt[cid]
        r = rows[(rows[:, 2] > 5) & (rows[:, 2] + rows[:, 4] < 315)][0]
        match = full[(full[:, 0] == r[0]) & (full[:, 1] == r[1])][0]
        feet_narrow = apply_homography(ds.env.image_to_metres(cid), [[r[2] + r[4] / 2, r[3] + r[5]]])
        foot = [[match[2] + match[4] / 2, match[3] + match[5]]]
        feet_full = apply_homography(original.env.image_to_metres(cid), foot)
        assert np.allclose(feet_narrow, feet_full, atol=0.02)
    assert (out / "gt" / "gt_world.txt").read_text() == (src / "gt" / "gt_world.txt").read_text()
    with pytest.raises(DatasetError, match="exists"):
        derive(src, out)


def test_cli_derives_and_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["derive-narrow-views", str(shared("pets2009-s2l1")), str(tmp_path / "p")]) == 0
    assert "re-entries of 10 people" in capsys.readouterr().out
    assert main(["derive-narrow-views", str(tmp_path / "nothing"), str(tmp_path / "q")]) == 2
    assert "environment.json" in capsys.readouterr().err
    assert main(["derive-narrow-views", str(shared("pets2009-s2l1")), str(tmp_path / "r"), "--keep", "1.5"]) == 2
    assert "keep must be" in capsys.readouterr().err


def test_many_cameras_are_planned_camera_by_camera() -> None:
    """3^n combinations stop being tried beyond six cameras; the search still finds the sides with re-entries."""
    from app.evaluation.narrow_views import plan

    cams = [f"c{i}" for i in range(8)]
    # person 1 walks left→right in every camera; keeping the middle everywhere hides them only in the middle
    gt = {c: np.array([[f, 1, 6 * f, 0, 20, 40, 1, 1, 1] for f in range(1, 100)], np.float64) for c in cams}
    p = plan(gt, dict.fromkeys(cams, 640), keep=0.3, gap_frames=14, min_visible=0.5)
    assert len(p.sides) == 8 and p.reentries >= 1
