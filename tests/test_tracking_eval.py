"""`spoton eval` plumbing: TrackEval metrics on constructed tracks, dataset reading, a short real run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from app.evaluation.mot_metrics import (
    frames_to_sequence,
    identity_consistency,
    mot_scores,
    pool,
    with_majority_ids,
    with_true_ids,
)
from app.evaluation.tracking_eval import DatasetError, load_dataset, read_mot_file, run_line
from tests.conftest import shared


def walk(person: int, frames: range, x0: float) -> np.ndarray:
    """MOT rows of one person walking right, 40×100 px box."""
    return np.array([[f, person, x0 + 3 * f, 50.0, 40.0, 100.0] for f in frames], np.float64)


GT = np.vstack([walk(1, range(1, 21), 0.0), walk(2, range(1, 21), 300.0)])


def test_perfect_tracks_score_one_everywhere() -> None:
    s = mot_scores(frames_to_sequence(GT, GT, 1, 20))
    assert (s.mota, s.idf1, s.hota, s.precision, s.recall) == pytest.approx((1, 1, 1, 1, 1))
    assert s.id_switches == 0 and s.gt_ids == 2 and s.gt_boxes == 40


def test_an_id_switch_costs_idf1_but_not_detection() -> None:
    pred = GT.copy()
    late = pred[:, 0] > 10
    pred[late, 1] = 3 - pred[late, 1]  # the two ids swap half-way
    s = mot_scores(frames_to_sequence(GT, pred, 1, 20))
    assert s.precision == pytest.approx(1.0) and s.recall == pytest.approx(1.0)
    assert s.id_switches == 2
    assert s.idf1 == pytest.approx(0.5)
    assert s.assa < 1.0 and s.deta == pytest.approx(1.0, abs=1e-6)


def test_the_ceiling_gives_covered_boxes_their_true_ids_and_keeps_false_positives() -> None:
    pred = GT.copy()
    late = pred[:, 0] > 10
    pred[late, 1] = 3 - pred[late, 1]  # the two ids swap half-way
    ghost = np.array([[5, 7, 600.0, 50.0, 40.0, 100.0]])  # a box where nobody is
    seq = frames_to_sequence(GT, np.vstack([pred, ghost]), 1, 20)
    assert mot_scores(seq).idf1 < 0.6
    ceiling = mot_scores(with_true_ids(seq))
    assert ceiling.id_switches == 0 and ceiling.recall == pytest.approx(1.0)
    assert ceiling.precision == pytest.approx(40 / 41)
    assert ceiling.idf1 == pytest.approx(2 * 40 / 81)


def test_missed_frames_and_frames_outside_the_range() -> None:
    pred = GT[GT[:, 0] <= 10]
    s = mot_scores(frames_to_sequence(GT, pred, 1, 20))
    assert s.recall == pytest.approx(0.5) and s.mota == pytest.approx(0.5)
    # predictions after the last scored frame are not counted as false positives
    extra = np.vstack([GT, walk(9, range(21, 30), 0.0)])
    assert mot_scores(frames_to_sequence(GT, extra, 1, 20)).precision == pytest.approx(1.0)


def test_cross_camera_scores_need_one_id_per_person_across_cameras() -> None:
    cam1 = frames_to_sequence(GT, GT, 1, 20)
    same_ids = pool([cam1, frames_to_sequence(GT, GT, 1, 20)])
    assert mot_scores(same_ids).idf1 == pytest.approx(1.0)
    c = identity_consistency(same_ids)
    assert (c.purity, c.fragmentation, c.max_fragmentation) == (1.0, 1.0, 1)
    # camera 2 gives everyone a new global id: each camera alone is perfect, across cameras it is not
    renamed = GT.copy()
    renamed[:, 1] += 100
    cam2 = frames_to_sequence(GT, renamed, 1, 20)
    assert mot_scores(cam2).idf1 == pytest.approx(1.0)
    split = pool([cam1, cam2])
    assert mot_scores(split).idf1 == pytest.approx(0.5)
    c = identity_consistency(split)
    assert c.purity == pytest.approx(0.5) and c.fragmentation == 2.0
    assert c.per_person[1]["ids"] == 2


def test_the_track_ceiling_joins_fragments_but_cannot_split_a_switched_track() -> None:
    pred = GT.copy()
    pred[(pred[:, 1] == 1) & (pred[:, 0] > 10), 1] = 5  # person 1's track breaks in two: joinable
    assert mot_scores(with_majority_ids(frames_to_sequence(GT, pred, 1, 20))).idf1 == pytest.approx(1.0)
    switched = GT.copy()
    late = switched[:, 0] > 15
    switched[late, 1] = 3 - switched[late, 1]  # both tracks follow the other person for the last 5 frames
    ceiling = mot_scores(with_majority_ids(frames_to_sequence(GT, switched, 1, 20)))
    assert ceiling.idf1 == pytest.approx(0.75)


def test_reading_mot_files(tmp_path: Path) -> None:
    f = tmp_path / "gt.txt"
    f.write_text("1,5,10,20,30,40,1,1,1\n2,5,11,20,30,40,0,1,1\n")
    rows = read_mot_file(f)
    assert rows.tolist() == [[1, 5, 10, 20, 30, 40]]  # conf 0 marks an ignored box
    with pytest.raises(DatasetError, match="not found"):
        read_mot_file(tmp_path / "missing.txt")
    f.write_text("1,5,10\n")
    with pytest.raises(DatasetError, match="6"):
        read_mot_file(f)
    f.write_text("0,5,10,20,30,40\n")
    with pytest.raises(DatasetError, match="≥ 1"):
        read_mot_file(f)


def test_datasets_know_their_scored_frames() -> None:
    pets = load_dataset(shared("pets2009-s2l1"))
    assert pets.scored_frames == (1, 400) and list(pets.gt) == ["c1"]
    mv = load_dataset(shared("multiview-dev"))
    assert mv.scored_frames == (1, 400) and sorted(mv.gt) == ["c1", "c2", "c3", "c4"]


def test_eval_command_on_a_short_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    assert main(["eval", str(shared("multiview-dev")), "--max-frames", "6", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "global IDF1" in printed and "c4" in printed
    report = json.loads(out.read_text())
    assert report["scored_frames"] == [1, 6]
    assert sorted(report["per_camera"]) == ["c1", "c2", "c3", "c4"]
    assert report["run"]["global_frames"] == 6 and report["run"]["camera_frames"] == 24
    # the frame processor hands the registry's events on with each frame
    assert report["run"]["identity_events"]["created"] >= report["cross_camera"]["global_ids"] >= 1
    cross = report["cross_camera"]
    assert 0.0 <= cross["purity"] <= 1.0 and cross["global_ids"] >= 1
    # the first frames are easy: people are found and the cameras agree on who is who
    assert report["per_camera"]["c2"]["recall"] > 0.5
    assert cross["global_idf1"] > 0.5
    assert report["ceiling_with_true_ids"]["all"]["idf1"] >= cross["global_idf1"]
    assert report["ceiling_with_true_ids"]["all"]["idf1"] >= report["ceiling_joining_tracks"]["idf1"]


def test_eval_command_reports_a_bad_dataset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == 2
    assert "environment" in capsys.readouterr().err


def test_eval_several_datasets_prints_one_row_each_and_replays_a_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`spoton eval DIR DIR` ends with a table of one row per dataset; `--record` then `--replay` re-runs the
    identity layer alone and scores exactly what the recorded run scored."""
    dev, val = str(shared("multiview-dev")), str(shared("multiview-val"))
    assert main(["eval", dev, val, "--max-frames", "4"]) == 0
    printed = capsys.readouterr().out
    table = printed[printed.index("re-entries kept") - 120 :]
    assert "pets-derived " in table and "pets-derived-val" in table
    assert printed.count("global ids for") == 2  # each report's one-line summary

    log, first, second = tmp_path / "ids.pkl", tmp_path / "rec.json", tmp_path / "rep.json"
    assert main(["eval", dev, "--max-frames", "5", "--record", str(log), "--out", str(first)]) == 0
    assert log.is_file()
    assert main(["eval", dev, "--max-frames", "5", "--replay", str(log), "--out", str(second)]) == 0
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["cross_camera"]["global_idf1"] == b["cross_camera"]["global_idf1"]
    assert a["per_camera"] == b["per_camera"] and a["reentries"] == b["reentries"]
    assert main(["eval", dev, val, "--replay", str(log)]) == 2


def test_eval_without_ground_truth_counts_people(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An environment with no ground truth (the demo, one's own recording) is run and its identities counted:
    how many ids were created over the video and how many later merged, i.e. how many people it saw."""
    import shutil

    src = shared("multiview-dev")
    plain = tmp_path / "unlabelled"
    plain.mkdir()
    for f in src.iterdir():
        if f.is_file():
            shutil.copy(f, plain / f.name)
    out = tmp_path / "r.json"
    assert main(["eval", str(plain), str(src), "--max-frames", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pets-derived: no ground truth; over all 4 frames" in printed and "people counted" in printed
    body = json.loads(out.read_text())
    assert body[0]["run"]["identity_events"]["created"] >= 1 and "per_camera" not in body[0]
    assert body[1]["per_camera"]  # the labelled one is scored as before


def test_the_run_line_names_shrunk_and_enlarged_cameras() -> None:
    facts = {"global_frames": 10, "camera_frames": 40, "wall_s": 2.0, "camera_fps": 20.0,
             "detector_input": {"c1": 320, "c2": 480}, "detector_model_input": 416}  # fmt: skip
    line = run_line(facts)
    assert line.endswith("; detector input shrunk: c1 320; detector input enlarged: c2 480")
    assert "shrunk" not in run_line(facts | {"detector_input": {}})
    older = {k: v for k, v in facts.items() if k != "detector_model_input"} | {"detector_input": {"c1": 320}}
    assert run_line(older).endswith("; detector input shrunk: c1 320")  # a report from before enlarging existed
