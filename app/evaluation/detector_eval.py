"""``spoton eval-detector DATASET_DIR``: person-detection accuracy of every available detector, COCO-style.

Every frame from the first to the last ground-truth frame (every ``frame_step``-th) of every camera of a
dataset in the shared format is run through each detector variant (detector × tiling), all cameras of a
frame in one call as in the pipeline. pycocotools' ``COCOeval`` (the reference COCO evaluator) scores the
person boxes: AP50 and AP50:95 from detections down to ``eval_threshold`` (0.05, as COCO evaluations do),
and recall / precision at the detector's *operating* threshold (the one the product runs with) at IoU 0.5.
The ground truth has no ignore regions, so this is plain COCO evaluation with one category; people the
annotation leaves out count as false positives, people it labels behind others as misses.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from app.core.config import Settings
from app.evaluation.tracking_eval import Dataset, DatasetError, load_dataset
from app.models.base import Detections, ImageBGR, PersonDetector
from app.models.tiling import tile_count

log = logging.getLogger(__name__)

DETECTORS = ("nanodet", "centernet", "fasterrcnn")
EVAL_THRESHOLD = 0.05
"""Lowest score kept for AP: the precision/recall curve needs the low-confidence tail."""
MATCH_IOU = 0.5
TILINGS = ("auto", "1", "2")


THRESHOLD_SETTING = {
    "nanodet": "detector_score_threshold",
    "centernet": "centernet_score_threshold",
    "fasterrcnn": "fasterrcnn_score_threshold",
}
"""The setting that holds each detector's operating threshold."""


@dataclass(frozen=True, slots=True)
class Variant:
    """One configuration to score: a detector, its tiling and the settings that select them."""

    name: str
    detector: str
    tiles: str
    settings: Settings
    default: bool = False
    """What the product runs with these settings on this dataset."""

    @property
    def operating_threshold(self) -> float:
        return float(getattr(self.settings, THRESHOLD_SETTING[self.detector]))

    def build(self, score_threshold: float) -> PersonDetector:
        """The detector as the product builds it, but keeping detections down to ``score_threshold``."""
        s = self.settings.model_copy(update={THRESHOLD_SETTING[self.detector]: score_threshold})
        if self.detector == "nanodet":
            from app.models.nanodet import NanoDetDetector

            return NanoDetDetector.from_settings(s)
        if self.detector == "centernet":
            from app.models.centernet import CenterNetDetector

            return CenterNetDetector.from_settings(s)
        from app.models.fasterrcnn import FasterRCNNDetector

        return FasterRCNNDetector.from_settings(s)


@dataclass(slots=True)
class VariantScore:
    variant: str
    detector: str
    model: str
    device: str
    tiles: str
    default: bool
    operating_threshold: float
    ap50: float
    ap50_95: float
    recall: float
    precision: float
    true_positives: int
    false_positives: int
    missed: int
    ms_per_image: float
    seconds: float


@dataclass(slots=True)
class DetectorEvalReport:
    dataset: str
    frames: tuple[int, int]
    frame_step: int
    images: int
    gt_boxes: int
    eval_threshold: float
    scores: list[VariantScore] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """Markdown table, the default variant marked with *."""
        lines = [
            "| variant | model | device | thr | AP50 | AP50:95 | recall@thr | precision@thr | ms/image |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in self.scores:
            lines.append(
                f"| {s.variant}{' *' if s.default else ''} | {s.model} | {s.device} | {s.operating_threshold:g} | "
                f"{s.ap50:.3f} | {s.ap50_95:.3f} | {s.recall:.3f} | {s.precision:.3f} | {s.ms_per_image:.0f} |"
            )
        for name in self.unavailable:
            lines.append(f"| {name} | unavailable (see below) | | | | | | | |")
        return "\n".join(lines)


# -- variants ------------------------------------------------------------------------------------------------
def _tilings_for(sizes: list[tuple[int, int]]) -> list[str]:
    """``auto`` plus each explicit tiling that differs from what ``auto`` picks for some camera."""
    auto = [tile_count("auto", w, h) for w, h in sizes]
    return ["auto"] + [t for t in TILINGS[1:] if any(int(t) != a for a in auto)]


def build_variants(
    settings: Settings, detectors: list[str], sizes: list[tuple[int, int]]
) -> tuple[list[Variant], dict[str, str]]:
    """The variants of each requested detector that can run here; the others with the reason why not."""
    from app.models.registry import resolve_detector_choice

    unknown = sorted(set(detectors) - set(DETECTORS))
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {', '.join(DETECTORS)}")
    default = resolve_detector_choice(settings)
    variants: list[Variant] = []
    unavailable: dict[str, str] = {}
    for name in detectors:
        if name == "nanodet":
            variants.extend(_nanodet_variants(settings, sizes, default == name))
            continue
        if name == "centernet":
            for tiles in _tilings_for(sizes):
                tiled = settings.model_copy(update={"centernet_tiles": tiles})
                is_default = default == name and tiles == settings.centernet_tiles
                variants.append(Variant(f"{name} tiles={tiles}", name, tiles, tiled, is_default))
            continue
        from app.models.fasterrcnn import WeightsUnavailableError, resolve_weights

        label = f"fasterrcnn {settings.fasterrcnn_variant}"
        try:
            resolve_weights(settings.fasterrcnn_variant, settings.fasterrcnn_weights, settings.fasterrcnn_download)
        except WeightsUnavailableError as exc:
            unavailable[label] = str(exc)
            continue
        variants.append(Variant(label, name, "-", settings, default == name))
    return variants, unavailable


def _nanodet_variants(settings: Settings, sizes: list[tuple[int, int]], chosen: bool) -> list[Variant]:
    """Every runtime × precision this machine runs, side by side (the configured one also in the other
    tilings); with a custom model file only the configured variant."""
    from app.models.nanodet import available_variants, resolve_runtime

    current = resolve_runtime(settings.nanodet_runtime, settings.nanodet_precision)
    others = [v for v in available_variants() if v != current and v != ("openvino", "fp32")]  # ≈ onnxruntime fp32
    combos = [current] + (others if settings.nanodet_model_path is None else [])
    out = []
    for runtime, precision in combos:
        for tiles in _tilings_for(sizes):
            if (runtime, precision) != current and tiles != "auto":
                continue
            s = settings.model_copy(
                update={"nanodet_tiles": tiles, "nanodet_precision": precision, "nanodet_runtime": runtime}
            )
            is_default = chosen and tiles == settings.nanodet_tiles and (runtime, precision) == current
            out.append(Variant(f"nanodet {precision} {runtime} tiles={tiles}", "nanodet", tiles, s, is_default))
    other_input = "square" if settings.nanodet_input == "fit" else "fit"
    runtime, precision = current
    s = settings.model_copy(update={"nanodet_input": other_input, "nanodet_tiles": "auto"})
    out.append(Variant(f"nanodet {precision} {runtime} tiles=auto input={other_input}", "nanodet", "auto", s, False))
    return out


# -- frames --------------------------------------------------------------------------------------------------
def iter_frames(ds: Dataset, frame_step: int = 1) -> Iterator[tuple[int, dict[str, ImageBGR]]]:
    """Yield ``(frame_number, {camera: image})`` for the scored frames, every ``frame_step``-th."""
    if frame_step < 1:
        raise ValueError(f"frame_step must be at least 1, not {frame_step}")
    first, last = ds.scored_frames
    caps = {cid: cv2.VideoCapture(str(cam.video)) for cid, cam in ds.env.cameras.items()}
    try:
        for cid, cap in caps.items():
            if not cap.isOpened():
                raise DatasetError(f"cannot open video {ds.env.cameras[cid].video}")
        number = ds.first_frame
        while number <= last:
            images: dict[str, ImageBGR] = {}
            for cid, cap in caps.items():
                ok, image = cap.read()
                if ok:
                    images[cid] = cast(ImageBGR, image)
            if not images:
                break
            if number >= first and (number - first) % frame_step == 0:
                yield number, images
            number += 1
    finally:
        for cap in caps.values():
            cap.release()


# -- COCO ----------------------------------------------------------------------------------------------------
def _coco_ground_truth(images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> COCO:
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _coco_eval(gt: COCO, dets: list[dict[str, Any]], iou_thrs: np.ndarray | None = None) -> COCOeval | None:
    if not dets:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        if iou_thrs is not None:
            ev.params.iouThrs = iou_thrs
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def score_detections(
    gt: COCO, dets: list[dict[str, Any]], operating_threshold: float
) -> tuple[float, float, float, float, int, int, int]:
    """AP50, AP50:95 over all ``dets``; recall, precision, TP, FP, missed at IoU 0.5 for the dets at or above
    ``operating_threshold`` (COCO matching: greedy by score, one detection per ground-truth box)."""
    n_gt = len(gt.getAnnIds())
    full = _coco_eval(gt, dets)
    ap50_95, ap50 = (float(full.stats[0]), float(full.stats[1])) if full is not None else (0.0, 0.0)
    at_op = [d for d in dets if d["score"] >= operating_threshold]
    ev = _coco_eval(gt, at_op, np.array([MATCH_IOU]))
    tp = fp = 0
    if ev is not None:
        all_area = ev.params.areaRng[0]
        max_det = ev.params.maxDets[-1]
        for e in ev.evalImgs:
            if e is None or e["aRng"] != all_area or e["maxDet"] != max_det:
                continue
            matched = np.asarray(e["dtMatches"][0]) > 0
            ignored = np.asarray(e["dtIgnore"][0]).astype(bool)
            tp += int((matched & ~ignored).sum())
            fp += int((~matched & ~ignored).sum())
    recall = tp / n_gt if n_gt else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    return ap50, ap50_95, recall, precision, tp, fp, n_gt - tp


def _as_coco(image_id: int, det: Detections) -> list[dict[str, Any]]:
    out = []
    for (x1, y1, x2, y2), s in zip(det.boxes.tolist(), det.scores.tolist(), strict=True):
        out.append({"image_id": image_id, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    return out


# -- the evaluation ------------------------------------------------------------------------------------------
def evaluate_detectors(
    dataset_dir: Path,
    settings: Settings | None = None,
    detectors: list[str] | None = None,
    frame_step: int = 1,
    eval_threshold: float = EVAL_THRESHOLD,
    on_progress: Callable[[int], None] | None = None,
) -> DetectorEvalReport:
    settings = settings or Settings()
    ds = load_dataset(Path(dataset_dir))
    sizes = [(c.width, c.height) for c in ds.env.cameras.values()]
    variants, unavailable = build_variants(settings, list(detectors or DETECTORS), sizes)
    built = []
    for v in variants:
        det = v.build(eval_threshold)
        det.warmup()
        built.append((v, det))

    gt_by_frame = {cid: {int(f): rows[rows[:, 0] == f] for f in np.unique(rows[:, 0])} for cid, rows in ds.gt.items()}
    cams = list(ds.env.cameras)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    dets: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    seconds = dict.fromkeys(dets, 0.0)
    first, last = ds.scored_frames
    for k, (number, frames) in enumerate(iter_frames(ds, frame_step)):
        ids = []
        for cid in cams:
            if cid not in frames:
                continue
            image_id = len(images) + 1
            h, w = frames[cid].shape[:2]
            images.append({"id": image_id, "width": w, "height": h, "file_name": f"{cid}/{number}"})
            for row in gt_by_frame[cid].get(number, np.zeros((0, 6))):
                x, y, bw, bh = (float(c) for c in row[2:6])
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                    "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
            ids.append((image_id, frames[cid]))
        batch = [im for _, im in ids]
        for v, det in built:
            t0 = time.perf_counter()
            results = det.detect(batch)
            seconds[v.name] += time.perf_counter() - t0
            for (image_id, _), r in zip(ids, results, strict=True):
                dets[v.name].extend(_as_coco(image_id, r))
        if on_progress is not None:
            on_progress(k + 1)

    gt = _coco_ground_truth(images, annotations)
    report = DetectorEvalReport(
        dataset=str(dataset_dir), frames=(first, last), frame_step=frame_step, images=len(images),
        gt_boxes=len(annotations), eval_threshold=eval_threshold, unavailable=unavailable,
    )
    for v, det in built:
        ap50, ap, recall, precision, tp, fp, fn = score_detections(gt, dets[v.name], v.operating_threshold)
        report.scores.append(VariantScore(
            variant=v.name, detector=v.detector, model=det.info.name, device=det.info.device, tiles=v.tiles,
            default=v.default, operating_threshold=v.operating_threshold, ap50=ap50, ap50_95=ap, recall=recall,
            precision=precision, true_positives=tp, false_positives=fp, missed=fn,
            ms_per_image=1000.0 * seconds[v.name] / max(1, len(images)), seconds=seconds[v.name],
        ))
    return report
