"""NanoDet person detector on real frames (no mocks): accuracy against PETS2009 ground truth, output
contract, the two-tile path on a 1080p frame, and the missing-model error."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from app.core.config import Settings
from app.models.base import Detections, PersonDetector
from app.models.nanodet import DEFAULT_MODEL_PATH, NanoDetDetector, input_shape
from tests.conftest import read_frames

DATA = Path(__file__).resolve().parents[1].parent / "shared/data"
PETS = DATA / "pets2009-s2l1"
STILL_1080P = DATA / "mtmmc-stills/s37/c01/000000.jpg"
SAMPLED_FRAMES = list(range(1, 401, 20))  # 20 frames spread over the annotated 1..400

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL_PATH.is_file(), reason="app/assets/nanodet.onnx missing")


@pytest.fixture(scope="module")
def detector() -> NanoDetDetector:
    return NanoDetDetector()


@pytest.fixture(scope="module")
def pets() -> tuple[list[np.ndarray], np.ndarray]:
    """The sampled PETS frames (1-based numbers as in the MOT file) and the ground truth rows."""
    video = PETS / "vtest.avi"
    if not video.is_file():
        pytest.skip(f"{video} missing")
    frames = read_frames(video, SAMPLED_FRAMES)
    gt = np.loadtxt(PETS / "gt/gt_c1.txt", delimiter=",", ndmin=2)
    return frames, gt


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def greedy_matches(iou: np.ndarray, threshold: float = 0.5) -> int:
    """One-to-one matches at IoU ≥ threshold, best pairs first."""
    iou = iou.copy()
    matches = 0
    while iou.size and iou.max() >= threshold:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        iou[i, :] = -1
        iou[:, j] = -1
        matches += 1
    return matches


def test_is_a_person_detector(detector: NanoDetDetector) -> None:
    assert isinstance(detector, PersonDetector)
    assert detector.info.name == "nanodet-g"
    assert detector.info.device == "cpu"
    detector.warmup()


def test_recall_and_precision_on_pets(detector: NanoDetDetector, pets: tuple[list[np.ndarray], np.ndarray]) -> None:
    # Measured at the default threshold 0.35: these 20 frames give recall 0.94, precision 0.74 (113 TP,
    # 40 FP, 7 FN); all 400 annotated frames give recall 0.91, precision 0.73. Most "false" positives are
    # real people the PETS annotation leaves out (top path, right border) and one red sign.
    frames, gt = pets
    results = detector.detect(frames)  # all frames in one call: exercises the batched path
    tp = fp = fn = 0
    for number, det in zip(SAMPLED_FRAMES, results, strict=True):
        truth = gt[gt[:, 0] == number][:, 2:6].copy()
        truth[:, 2:] += truth[:, :2]
        k = greedy_matches(iou_matrix(det.boxes, truth)) if len(det) and len(truth) else 0
        tp += k
        fp += len(det) - k
        fn += len(truth) - k
    recall, precision = tp / (tp + fn), tp / (tp + fp)
    assert recall >= 0.85, f"recall {recall:.3f} (tp {tp}, fn {fn})"
    assert precision >= 0.6, f"precision {precision:.3f} (tp {tp}, fp {fp})"


def test_output_contract(detector: NanoDetDetector, pets: tuple[list[np.ndarray], np.ndarray]) -> None:
    frames, _ = pets
    small = np.ascontiguousarray(cv2.resize(frames[5], (320, 240)), dtype=np.uint8)
    results = detector.detect([frames[5], small])
    assert len(results) == 2
    for det, image in zip(results, [frames[5], small], strict=True):
        assert isinstance(det, Detections)
        assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32
        assert det.boxes.ndim == 2 and det.boxes.shape[1] == 4
        assert det.scores.shape == (len(det),)
        assert len(det) > 0
        h, w = image.shape[:2]
        assert (det.boxes[:, 0] >= 0).all() and (det.boxes[:, 1] >= 0).all()
        assert (det.boxes[:, 2] <= w).all() and (det.boxes[:, 3] <= h).all()
        assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()
        assert ((det.scores >= detector.score_threshold) & (det.scores <= 1)).all()
    assert detector.detect([]) == []


def test_batch_matches_single_calls(detector: NanoDetDetector, pets: tuple[list[np.ndarray], np.ndarray]) -> None:
    frames, _ = pets
    together = detector.detect(frames[:3])
    for frame, det in zip(frames[:3], together, strict=True):
        alone = detector.detect([frame])[0]
        np.testing.assert_allclose(det.boxes, alone.boxes, atol=1e-3)
        np.testing.assert_allclose(det.scores, alone.scores, atol=1e-5)


def test_black_image_has_no_detections(detector: NanoDetDetector) -> None:
    results = detector.detect([np.zeros((576, 768, 3), np.uint8), np.zeros((1080, 1920, 3), np.uint8)])
    assert [len(r) for r in results] == [0, 0]
    assert results[0].boxes.shape == (0, 4) and results[0].boxes.dtype == np.float32


def test_1080p_frame_uses_two_tiles_and_finds_people(detector: NanoDetDetector) -> None:
    if not STILL_1080P.is_file():
        pytest.skip(f"{STILL_1080P} missing")
    read = cv2.imread(str(STILL_1080P))
    assert read is not None
    image = np.ascontiguousarray(read, dtype=np.uint8)
    assert image.shape == (1080, 1920, 3)
    tiles = detector._tiles_of(0, image)
    assert len(tiles) == 2
    assert tiles[0].x0 == 0 and tiles[1].x1 == 1920 and tiles[0].x1 > tiles[1].x0  # they overlap
    det = detector.detect([image])[0]
    # Two people sit on a mat right of centre (around x 1170..1325, y 540..655); measured scores 0.60 and
    # 0.44 with two tiles, while one 416-px tile of the whole frame finds nobody.
    assert len(det) >= 1
    cx = (det.boxes[:, 0] + det.boxes[:, 2]) / 2
    cy = (det.boxes[:, 1] + det.boxes[:, 3]) / 2
    assert ((cx > 1100) & (cx < 1400) & (cy > 500) & (cy < 700)).any()
    assert ((det.boxes[:, 2] <= 1920) & (det.boxes[:, 3] <= 1080)).all()


def test_four_by_three_frame_uses_one_tile(detector: NanoDetDetector) -> None:
    assert len(detector._tiles_of(0, np.zeros((576, 768, 3), np.uint8))) == 1
    assert len(detector._tiles_of(0, np.zeros((480, 640, 3), np.uint8))) == 1


def test_input_follows_the_frame_shape(detector: NanoDetDetector) -> None:
    """4:3 cameras run as 416×320 (not letterboxed into 416×416); 16:9 tiles are near-square anyway."""
    fit = [input_shape(t, dynamic=True) for t in detector._tiles_of(0, np.zeros((480, 640, 3), np.uint8))]
    assert fit == [(320, 416)]
    assert input_shape(detector._tiles_of(0, np.zeros((576, 768, 3), np.uint8))[0], dynamic=True) == (320, 416)
    assert input_shape(detector._tiles_of(0, np.zeros((480, 360, 3), np.uint8))[0], dynamic=True) == (416, 320)
    wide = [input_shape(t, dynamic=True) for t in detector._tiles_of(0, np.zeros((1080, 1920, 3), np.uint8))]
    assert wide == [(416, 416), (416, 416)]
    assert input_shape(detector._tiles_of(0, np.zeros((480, 640, 3), np.uint8))[0], dynamic=False) == (416, 416)


def test_fitted_input_finds_the_same_people_as_the_square(
    detector: NanoDetDetector, pets: tuple[list[np.ndarray], np.ndarray]
) -> None:
    """Dropping the letterbox's padding rows must not change what is found: boxes agree one to one."""
    frames, _ = pets
    square = NanoDetDetector(input_fit=False)
    matched = total = 0
    for fit_det, sq_det in zip(detector.detect(frames), square.detect(frames), strict=True):
        total += max(len(fit_det), len(sq_det))
        matched += greedy_matches(iou_matrix(fit_det.boxes, sq_det.boxes), 0.9)
    assert total > 100 and matched >= 0.95 * total


def test_a_model_with_a_fixed_input_size_gets_the_square(
    tmp_path: Path, pets: tuple[list[np.ndarray], np.ndarray]
) -> None:
    """A NanoDet file converted before inputs could vary (fixed 416×416) still works, letterboxed."""
    import onnx

    model = onnx.load(str(DEFAULT_MODEL_PATH))
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.ClearField("dim_param")
        d.dim_value = 416
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    det = NanoDetDetector(model_path=fixed)
    assert det._dynamic_shape is False
    frames = pets[0][:2]
    for a, b in zip(det.detect(frames), NanoDetDetector(input_fit=False).detect(frames), strict=True):
        assert len(a) > 0
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)


def test_from_settings() -> None:
    settings = Settings(
        detector_score_threshold=0.5,
        detector_nms_iou=0.4,
        nanodet_tiles="2",
        nanodet_tile_overlap=0.1,
        onnx_threads=1,
    )
    det = NanoDetDetector.from_settings(settings)
    assert (det.score_threshold, det.nms_iou, det.tiles, det.tile_overlap) == (0.5, 0.4, "2", 0.1)
    assert len(det._tiles_of(0, np.zeros((576, 768, 3), np.uint8))) == 2
    small = NanoDetDetector.from_settings(Settings(nanodet_input_size=320))
    tile = small._tiles_of(0, np.zeros((480, 640, 3), np.uint8))[0]
    assert input_shape(tile, True, small.input_size) == (256, 320)
    assert len(small.detect([np.zeros((480, 640, 3), np.uint8)])[0]) == 0
    with pytest.raises(ValueError, match="multiple of 32"):
        NanoDetDetector(input_size=400)


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        NanoDetDetector(model_path=tmp_path / "nope.onnx")
    message = str(err.value)
    assert "SPOTON_NANODET_MODEL_PATH" in message
    assert "scripts/convert_nanodet.py" in message
    assert "nope.onnx" in message


def test_openvino_runtime_serves_concurrent_callers() -> None:
    """Tasks share one detector and call it from their own threads (onnxruntime allows it; so must OpenVINO)."""
    from concurrent.futures import ThreadPoolExecutor

    from app.models.openvino_session import openvino_available

    if not openvino_available():
        pytest.skip("openvino is not installed")
    det = NanoDetDetector(runtime="openvino", precision="fp32")
    frames = [np.full((480, 640, 3), v, np.uint8) for v in (40, 90, 140, 190)]
    expected = [det.detect([f])[0].boxes.shape for f in frames]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda f: det.detect([f])[0].boxes.shape, frames * 5))
    assert got == expected * 5


def test_auto_is_fp32_on_onnxruntime_and_bfloat16_is_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """bfloat16 kept per-box accuracy but cost up to 5.4 points of global IDF1: never the default."""
    from app.models import openvino_session
    from app.models.nanodet import resolve_runtime

    monkeypatch.setattr(openvino_session, "native_bf16", lambda: True)
    assert resolve_runtime("auto", "auto") == ("onnxruntime", "fp32")
    assert resolve_runtime("onnxruntime", "int8") == ("onnxruntime", "int8")
    if openvino_session.openvino_available():
        assert resolve_runtime("auto", "bf16") == ("openvino", "bf16")
        assert resolve_runtime("openvino", "auto") == ("openvino", "bf16")
