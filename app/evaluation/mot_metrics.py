"""MOTA / IDF1 / HOTA from TrackEval, plus the cross-camera identity figures built on the same matching.

TrackEval (the MOTChallenge reference implementation) computes the metrics from one "sequence": per timestep
the ground-truth ids, the predicted ids and their IoU matrix. A single camera is one sequence with one
timestep per frame. The cross-camera scores pool every camera's boxes into one sequence with one timestep per
(camera, frame), so one identity space spans all cameras: IDF1 there is the multi-camera IDF1 of MTMC
benchmarks (a person followed under one id across cameras scores; a new id at each camera does not).

Boxes are MOT rows ``frame, id, x, y, w, h`` (top-left corner and size, pixels).
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment
from trackeval.datasets._base_dataset import _BaseDataset
from trackeval.metrics import CLEAR, HOTA, Identity

MotRows = npt.NDArray[np.float64]
"""N×6: frame, id, x, y, w, h."""

IOU_THRESHOLD = 0.5
"""A predicted box covers a ground-truth box at IoU ≥ 0.5 (the CLEAR and Identity convention)."""


@dataclass(slots=True)
class Sequence:
    """One evaluation sequence: aligned timesteps of ground-truth and predicted boxes."""

    gt: list[MotRows]
    pred: list[MotRows]

    def __post_init__(self) -> None:
        if len(self.gt) != len(self.pred):
            raise ValueError(f"{len(self.gt)} ground-truth timesteps but {len(self.pred)} predicted")


def frames_to_sequence(gt: MotRows, pred: MotRows, first: int, last: int) -> Sequence:
    """Timesteps ``first..last`` (inclusive) of one camera; frames without boxes are empty timesteps."""
    gt_by = _split_by_frame(gt)
    pred_by = _split_by_frame(pred)
    empty = np.zeros((0, 6), np.float64)
    frames = range(first, last + 1)
    return Sequence([gt_by.get(f, empty) for f in frames], [pred_by.get(f, empty) for f in frames])


def pool(sequences: list[Sequence]) -> Sequence:
    """All timesteps of several sequences one after another (one identity space across cameras)."""
    return Sequence([t for s in sequences for t in s.gt], [t for s in sequences for t in s.pred])


def _split_by_frame(rows: MotRows) -> dict[int, MotRows]:
    rows = np.asarray(rows, np.float64).reshape(-1, 6)
    order = np.argsort(rows[:, 0], kind="stable")
    rows = rows[order]
    frames, starts = np.unique(rows[:, 0].astype(np.int64), return_index=True)
    bounds = [*starts.tolist(), len(rows)]
    return {int(f): rows[bounds[i] : bounds[i + 1]] for i, f in enumerate(frames.tolist())}


def _trackeval_data(seq: Sequence) -> dict[str, object]:
    """TrackEval's per-sequence input: ids renumbered 0..n-1, IoU similarity per timestep."""
    gt_map = {v: i for i, v in enumerate(np.unique(np.concatenate([t[:, 1] for t in seq.gt] + [np.zeros(0)])))}
    tr_map = {v: i for i, v in enumerate(np.unique(np.concatenate([t[:, 1] for t in seq.pred] + [np.zeros(0)])))}
    gt_ids, tr_ids, sims = [], [], []
    for g, p in zip(seq.gt, seq.pred, strict=True):
        gt_ids.append(np.array([gt_map[v] for v in g[:, 1]], np.int64))
        tr_ids.append(np.array([tr_map[v] for v in p[:, 1]], np.int64))
        sims.append(_BaseDataset._calculate_box_ious(g[:, 2:6].copy(), p[:, 2:6].copy(), box_format="xywh"))
    return {
        "num_timesteps": len(seq.gt),
        "num_gt_ids": len(gt_map),
        "num_tracker_ids": len(tr_map),
        "num_gt_dets": sum(len(t) for t in seq.gt),
        "num_tracker_dets": sum(len(t) for t in seq.pred),
        "gt_ids": gt_ids,
        "tracker_ids": tr_ids,
        "similarity_scores": sims,
    }


@dataclass(slots=True, frozen=True)
class MotScores:
    """The standard MOT figures of one sequence (ratios in 0..1, MOTA can be negative)."""

    mota: float
    idf1: float
    hota: float
    deta: float
    assa: float
    id_switches: int
    precision: float
    recall: float
    idp: float
    idr: float
    gt_boxes: int
    pred_boxes: int
    gt_ids: int
    pred_ids: int


_CLEAR = CLEAR({"PRINT_CONFIG": False, "THRESHOLD": IOU_THRESHOLD})
_IDENTITY = Identity({"PRINT_CONFIG": False, "THRESHOLD": IOU_THRESHOLD})
_HOTA = HOTA()


def mot_scores(seq: Sequence) -> MotScores:
    """CLEAR (MOTA, ID switches, precision/recall), Identity (IDF1) and HOTA (mean over IoU thresholds)."""
    data = _trackeval_data(seq)
    clear = _CLEAR.eval_sequence(data)
    ident = _IDENTITY.eval_sequence(data)
    hota = _HOTA.eval_sequence(data)
    return MotScores(
        mota=float(clear["MOTA"]),
        idf1=float(ident["IDF1"]),
        hota=float(np.mean(hota["HOTA"])),
        deta=float(np.mean(hota["DetA"])),
        assa=float(np.mean(hota["AssA"])),
        id_switches=int(clear["IDSW"]),
        precision=float(clear["CLR_Pr"]),
        recall=float(clear["CLR_Re"]),
        idp=float(ident["IDP"]),
        idr=float(ident["IDR"]),
        gt_boxes=int(data["num_gt_dets"]),  # type: ignore[call-overload]
        pred_boxes=int(data["num_tracker_dets"]),  # type: ignore[call-overload]
        gt_ids=int(data["num_gt_ids"]),  # type: ignore[call-overload]
        pred_ids=int(data["num_tracker_ids"]),  # type: ignore[call-overload]
    )


@dataclass(slots=True, frozen=True)
class IdentityConsistency:
    """How each ground-truth person's covered boxes are spread over predicted ids.

    `purity`: share of covered boxes that carry their person's majority predicted id (box-weighted over
    people). `fragmentation`: distinct predicted ids per person (mean; 1.0 is ideal), `max_fragmentation` the
    worst person. Only boxes covered by a prediction (IoU ≥ 0.5, one-to-one per timestep) count: missed boxes
    are a detection matter, measured by recall.
    """

    purity: float
    fragmentation: float
    max_fragmentation: int
    covered_boxes: int
    per_person: dict[int, dict[str, object]]


def _covered(g: MotRows, p: MotRows) -> list[tuple[int, int]]:
    """(gt row, predicted row) pairs of one timestep: one-to-one by IoU, at IoU ≥ `IOU_THRESHOLD`."""
    if not len(g) or not len(p):
        return []
    iou = _BaseDataset._calculate_box_ious(g[:, 2:6].copy(), p[:, 2:6].copy(), box_format="xywh")
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= IOU_THRESHOLD]


def identity_consistency(seq: Sequence) -> IdentityConsistency:
    ids_of: dict[int, Counter[int]] = defaultdict(Counter)
    for g, p in zip(seq.gt, seq.pred, strict=True):
        for r, c in _covered(g, p):
            ids_of[int(g[r, 1])][int(p[c, 1])] += 1
    covered = sum(sum(c.values()) for c in ids_of.values())
    majority = sum(c.most_common(1)[0][1] for c in ids_of.values())
    frags = [len(c) for c in ids_of.values()]
    per_person: dict[int, dict[str, object]] = {
        gid: {
            "boxes": sum(c.values()),
            "majority_id": c.most_common(1)[0][0],
            "purity": c.most_common(1)[0][1] / sum(c.values()),
            "ids": len(c),
        }
        for gid, c in sorted(ids_of.items())
    }
    return IdentityConsistency(
        purity=majority / covered if covered else 0.0,
        fragmentation=float(np.mean(frags)) if frags else 0.0,
        max_fragmentation=max(frags, default=0),
        covered_boxes=covered,
        per_person=per_person,
    )


def with_true_ids(seq: Sequence) -> Sequence:
    """The same boxes, each covered one carrying its person's true id and every other one an id of its own.

    Scoring this gives the ceiling of any identity assignment on these boxes: what is left below 1 is down to
    detection and box placement, not to ids.
    """
    pred: list[MotRows] = []
    next_id = -1.0
    for g, p in zip(seq.gt, seq.pred, strict=True):
        q = p.copy()
        covered = dict((c, r) for r, c in _covered(g, p))
        for c in range(len(q)):
            if c in covered:
                q[c, 1] = g[covered[c], 1]
            else:
                q[c, 1] = next_id
                next_id -= 1
        pred.append(q)
    return Sequence(seq.gt, pred)


def with_majority_ids(seq: Sequence) -> Sequence:
    """The same boxes, each predicted id replaced by the person most of its covered boxes belong to.

    Scored with a tracker's own ids this is the ceiling of any way of joining its tracks into identities: a
    track that switched person part-way keeps its minority boxes wrong.
    """
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    for g, p in zip(seq.gt, seq.pred, strict=True):
        for r, c in _covered(g, p):
            votes[int(p[c, 1])][int(g[r, 1])] += 1
    relabel = {pid: float(c.most_common(1)[0][0]) for pid, c in votes.items()}
    pred: list[MotRows] = []
    for p in seq.pred:
        q = p.copy()
        for c in range(len(q)):
            pid = int(q[c, 1])
            q[c, 1] = relabel.get(pid, -1.0 - pid)  # tracks that never cover anyone keep an id of their own
        pred.append(q)
    return Sequence(seq.gt, pred)


@dataclass(slots=True, frozen=True)
class ReentryStats:
    """People who left every view and came back, in the ground truth, and whether they kept their global id."""

    gt_reentries: int
    """Gaps longer than the threshold in a person's annotations across all cameras."""
    scored: int
    """Of those, with the person covered by an output box just before leaving and just after coming back."""
    kept: int
    """Of the scored, coming back under the same global id (majority of the boxes on each side)."""


def reentry_stats(per_camera: list[Sequence], gap_frames: int, window_frames: int) -> ReentryStats:
    """Re-entries over per-camera sequences that share their frame axis (frame ``i`` of each is one moment).

    A re-entry is a gap of more than ``gap_frames`` in which no camera's ground truth shows the person; the id
    before is the majority over the person's covered boxes in the ``window_frames`` frames up to the gap, the
    id after the majority over the ``window_frames`` frames from the return (a late link inside that window
    counts when it wins the majority).
    """
    annotated: dict[int, set[int]] = defaultdict(set)
    ids: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for seq in per_camera:
        for i, (g, p) in enumerate(zip(seq.gt, seq.pred, strict=True)):
            for r in range(len(g)):
                annotated[int(g[r, 1])].add(i)
            for r, c in _covered(g, p):
                ids[int(g[r, 1])][i].append(int(p[c, 1]))
    total = scored = kept = 0
    for person, frames in annotated.items():
        fs = sorted(frames)
        for a, b in itertools.pairwise(fs):
            if b - a <= gap_frames:
                continue
            total += 1
            before = Counter(x for f in range(a - window_frames + 1, a + 1) for x in ids[person].get(f, []))
            after = Counter(x for f in range(b, b + window_frames) for x in ids[person].get(f, []))
            if before and after:
                scored += 1
                kept += before.most_common(1)[0][0] == after.most_common(1)[0][0]
    return ReentryStats(total, scored, kept)
