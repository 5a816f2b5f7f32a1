"""``spoton derive-narrow-views SRC OUT``: a re-entry test set cut from a dataset with ground truth.

Our labelled sets are 400 frames of overlapping views in which nobody is out of every view for more than 2 s, so
they cannot show what breaks identities on longer recordings: people who walk out of every view and come back.
This derives a dataset in which they do, from the same real pixels and the same ground truth: every camera keeps
only a window of its image (``keep`` of its width: its left, middle or right part), as if it had a narrower lens,
so the views no longer cover the whole ground and people cross blind areas between them.

Which part each camera keeps is not a free choice (that would let a set be picked to flatter a method): of all
left/middle/right combinations, the one whose ground truth has the most re-entries (a person absent from every
view for more than ``gap_s``) is taken; ties go to the one that keeps more boxes, then to the first in
left-to-right order. The same rule applies to every source, so ``multiview-dev`` and ``multiview-val`` give two
independent re-entry sets (one to choose settings on, one to confirm them).

What changes, per camera: the video (cropped, re-encoded), the width, both homographies and the point pairs
(shifted by the crop), the ground truth (boxes with at least ``min_visible`` of their width inside the window,
clipped to it); overlaps are re-derived as camera pairs that see one person at the same moment in at least
``MIN_COVISIBLE_FRAMES`` frames. Ground positions (``gt/gt_world.txt``) and the map are copied unchanged.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from app.evaluation.tracking_eval import DatasetError, read_mot_file

log = logging.getLogger(__name__)

SIDES = ("L", "M", "R")
EXHAUSTIVE_CAMERAS = 6
MIN_COVISIBLE_FRAMES = 10
FOURCC = "mp4v"


@dataclass(slots=True, frozen=True)
class Window:
    """Columns ``x0 .. x1`` (pixels, end exclusive) that a camera keeps."""

    x0: int
    x1: int

    @classmethod
    def of(cls, side: str, width: int, keep: float) -> Window:
        w = max(1, round(width * keep))
        x0 = {"L": 0, "M": (width - w) // 2, "R": width - w}[side]
        return cls(x0, x0 + w)


@dataclass(slots=True, frozen=True)
class NarrowPlan:
    sides: dict[str, str]
    windows: dict[str, Window]
    reentries: int
    boxes: int
    people: int


def clip_rows(rows: np.ndarray, win: Window, min_visible: float) -> np.ndarray:
    """MOT rows (frame, id, x, y, w, h, ...) of the boxes that stay visible in ``win``, clipped and shifted."""
    if rows.size == 0:
        return rows.reshape(0, rows.shape[1] if rows.ndim == 2 else 6)
    x1 = rows[:, 2]
    x2 = rows[:, 2] + rows[:, 4]
    inside = np.clip(np.minimum(x2, win.x1) - np.maximum(x1, win.x0), 0, None)
    keep = inside >= min_visible * np.maximum(rows[:, 4], 1e-9)
    out = rows[keep].copy()
    nx1 = np.maximum(out[:, 2], win.x0)
    nx2 = np.minimum(out[:, 2] + out[:, 4], win.x1)
    out[:, 2] = nx1 - win.x0
    out[:, 4] = nx2 - nx1
    return out


def count_reentries(per_camera: list[np.ndarray], gap_frames: int) -> tuple[int, int]:
    """(re-entries, people): gaps of more than ``gap_frames`` frames in which no camera's rows show a person."""
    frames: dict[int, set[int]] = defaultdict(set)
    for rows in per_camera:
        for f, pid in rows[:, :2].astype(np.int64):
            frames[int(pid)].add(int(f))
    n = 0
    for fs in frames.values():
        n += sum(1 for a, b in itertools.pairwise(sorted(fs)) if b - a > gap_frames)
    return n, len(frames)


def plan(
    gt: dict[str, np.ndarray], widths: dict[str, int], keep: float, gap_frames: int, min_visible: float
) -> NarrowPlan:
    """The left/middle/right combination with the most re-entries (ties: more boxes kept, then first). Every
    combination up to `EXHAUSTIVE_CAMERAS` cameras; beyond, camera by camera until nothing improves (3^n grows
    too fast), from a few starting points (all middle, alternating left/right)."""
    if not 0.1 <= keep < 1.0:
        raise ValueError(f"keep must be in [0.1, 1): the share of each image's width a camera keeps (got {keep})")
    cams = list(gt)
    # each camera has only three windows: clip its ground truth once per window, not once per combination
    windows = {(c, side): Window.of(side, widths[c], keep) for c in cams for side in SIDES}
    clipped = {key: clip_rows(gt[key[0]], win, min_visible) for key, win in windows.items()}

    def evaluate(combo: tuple[str, ...]) -> NarrowPlan:
        wins = {c: windows[(c, s)] for c, s in zip(cams, combo, strict=True)}
        rows = [clipped[(c, s)] for c, s in zip(cams, combo, strict=True)]
        reentries, people = count_reentries(rows, gap_frames)
        return NarrowPlan(dict(zip(cams, combo, strict=True)), wins, reentries, sum(len(r) for r in rows), people)

    def better(a: NarrowPlan, b: NarrowPlan | None) -> bool:
        return b is None or (a.reentries, a.boxes) > (b.reentries, b.boxes)

    best: NarrowPlan | None = None
    if len(cams) <= EXHAUSTIVE_CAMERAS:
        for combo in itertools.product(SIDES, repeat=len(cams)):
            p = evaluate(combo)
            if better(p, best):
                best = p
    else:
        n = len(cams)
        seeds = [("M",) * n, tuple("LR"[i % 2] for i in range(n)), tuple("RL"[i % 2] for i in range(n))]
        for seed in seeds:
            current = evaluate(seed)
            chosen = list(seed)
            improved = True
            while improved:
                improved = False
                for i in range(n):
                    for side in SIDES:
                        trial_sides = [*chosen[:i], side, *chosen[i + 1 :]]
                        trial = evaluate(tuple(trial_sides))
                        if better(trial, current):
                            current, chosen, improved = trial, trial_sides, True
            if better(current, best):
                best = current
    assert best is not None
    return best


def _shifted(h: list[list[float]], x0: int) -> list[list[float]]:
    """A homography of the full image as one of the window whose column 0 is the image's column ``x0``."""
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    out: list[list[float]] = (np.asarray(h, np.float64) @ shift).tolist()
    return out


def _overlaps(rows: dict[str, np.ndarray]) -> list[list[str]]:
    seen: dict[str, set[tuple[int, int]]] = {c: {(int(f), int(p)) for f, p in r[:, :2]} for c, r in rows.items()}
    out = []
    for a, b in itertools.combinations(sorted(rows), 2):
        shared = {f for f, _ in seen[a] & seen[b]}
        if len(shared) >= MIN_COVISIBLE_FRAMES:
            out.append([a, b])
    return out


def _write_rows(path: Path, rows: np.ndarray) -> None:
    lines = [
        f"{int(r[0])},{int(r[1])},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.2f},1,1,1"
        for r in rows[np.lexsort((rows[:, 1], rows[:, 0]))]
    ]
    path.write_text("\n".join(lines) + ("\n" if lines else ""))


def _crop_video(src: Path, dst: Path, win: Window, fps: float) -> int:
    cap = cv2.VideoCapture(str(src))
    if not cap.isOpened():
        raise DatasetError(f"{src}: OpenCV cannot open this video")
    writer: cv2.VideoWriter | None = None
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            part = np.ascontiguousarray(frame[:, win.x0 : win.x1])
            if writer is None:
                writer = cv2.VideoWriter(str(dst), cv2.VideoWriter.fourcc(*FOURCC), fps, (part.shape[1], part.shape[0]))
                if not writer.isOpened():
                    raise DatasetError(f"OpenCV cannot write {FOURCC} .mp4 files ({dst})")
            writer.write(part)
            n += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if n == 0:
        raise DatasetError(f"{src}: no frame could be read")
    return n


def derive(
    src: Path,
    out: Path,
    keep: float = 0.5,
    gap_s: float = 2.0,
    min_visible: float = 0.5,
    force: bool = False,
    on_camera: Callable[[str], None] | None = None,
) -> NarrowPlan:
    """Write the narrow-view dataset of ``src`` into ``out`` and return the plan it follows."""
    src, out = Path(src), Path(out)
    env_file = src / "environment.json"
    if not env_file.is_file():
        raise DatasetError(f"{env_file}: not found (a dataset folder holds environment.json, videos and gt/)")
    if out.exists():
        if not force:
            raise DatasetError(f"{out} exists (--force replaces it)")
        if src.resolve() == out.resolve():
            raise DatasetError("the output folder must not be the source folder")
        shutil.rmtree(out)
    raw: dict[str, Any] = json.loads(env_file.read_text())
    cams = raw.get("cameras") or []
    if not cams:
        raise DatasetError(f"{env_file}: no cameras")
    fps = float(raw.get("fps") or cams[0].get("fps") or 10.0)
    gt = {str(c["id"]): read_mot_file(src / (c.get("gt_file") or f"gt/gt_{c['id']}.txt")) for c in cams}
    widths = {str(c["id"]): int(c["width"]) for c in cams}
    chosen = plan(gt, widths, keep, max(1, round(gap_s * fps)), min_visible)

    (out / "gt").mkdir(parents=True)
    clipped = {cid: clip_rows(rows, chosen.windows[cid], min_visible) for cid, rows in gt.items()}
    for c in cams:
        cid = str(c["id"])
        win = chosen.windows[cid]
        if on_camera is not None:
            on_camera(cid)
        _crop_video(src / c["video"], out / c["video"], win, float(c.get("fps") or fps))
        c["width"] = win.x1 - win.x0
        for key in ("image_to_map_homography", "image_to_world_homography_m"):
            if key in c:
                c[key] = _shifted(c[key], win.x0)
        if "point_pairs" in c:
            c["point_pairs"] = [[[u - win.x0, v], m] for (u, v), m in c["point_pairs"]]
        gt_name = c.get("gt_file") or f"gt/gt_{cid}.txt"
        c["gt_file"] = gt_name
        _write_rows(out / gt_name, clipped[cid])
        c["narrow_view"] = {"side": chosen.sides[cid], "x0": win.x0, "x1": win.x1, "source_width": widths[cid]}
    raw["id"] = f"{raw.get('id', src.name)}-narrow"
    raw["description"] = (
        f"Narrow views of {src.name}: each camera keeps {keep:.0%} of its width (app/evaluation/narrow_views.py), "
        f"so people cross blind areas: {chosen.reentries} re-entries (> {gap_s:g} s out of every view) of "
        f"{chosen.people} people."
    )
    raw["overlaps"] = _overlaps(clipped)
    raw.pop("overlap_details", None)
    (out / "environment.json").write_text(json.dumps(raw, indent=2))
    world = src / "gt" / "gt_world.txt"
    if world.is_file():
        shutil.copyfile(world, out / "gt" / "gt_world.txt")
    image = (raw.get("map") or {}).get("image")
    if image and (src / image).is_file():
        shutil.copyfile(src / image, out / image)
    log.info("narrow views of %s: %s, %d re-entries", src, chosen.sides, chosen.reentries)
    return chosen
