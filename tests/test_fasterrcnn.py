"""Faster R-CNN strategy: weights resolution (configured file, hub cache, download with checksum, clear
errors), the real torchvision network with random weights on the CPU (shapes, person-class filtering,
batching), and CUDA-only paths (fp16, pinned uploads, OOM halving) that skip without CUDA."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from app.core.config import Settings
from app.models.base import PersonDetector
from app.models.fasterrcnn import (
    PERSON,
    VARIANTS,
    FasterRCNNDetector,
    WeightsUnavailableError,
    _download,
    hub_checkpoint,
    resolve_weights,
)

SMALL = "mobilenet_v3_large_320_fpn"  # the cheapest variant: CPU tests stay fast
CAR = 3
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, so that nothing a developer downloaded leaks in."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


P_PERSON = float(np.exp(6.1) / (np.exp(6.1) + np.exp(6.0) + 89))  # 0.475: softmax over 91 logits
P_CAR = float(np.exp(6.0) / (np.exp(6.1) + np.exp(6.0) + 89))  # 0.430


@pytest.fixture(scope="module")
def person_biased() -> FasterRCNNDetector:
    """Random weights, except that the box classifier ignores its input and scores every proposal
    ``P_PERSON`` as a person and ``P_CAR`` as a car: the network's output holds both classes above the
    threshold, and the person filter has something to do."""
    torch.manual_seed(0)
    det = FasterRCNNDetector(SMALL, None, score_threshold=0.2, device="cpu", min_size=320, max_size=320)
    cls = det.model.roi_heads.box_predictor.cls_score
    with torch.no_grad():
        cls.weight.zero_()
        cls.bias.zero_()
        cls.bias[PERSON] = 6.1
        cls.bias[CAR] = 6.0
    return det


def frames(n: int, h: int = 240, w: int = 320, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


# -- weights ------------------------------------------------------------------------------------------------
def test_configured_file_that_is_missing_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match=r"SPOTON_FASTERRCNN_WEIGHTS=.*nope\.pth"):
        resolve_weights("resnet50_fpn_v2", tmp_path / "nope.pth")


def test_no_weights_offline_names_the_setting_and_the_cache(torch_home: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_weights("resnet50_fpn_v2", None, download=False)
    message = str(err.value)
    assert "SPOTON_FASTERRCNN_WEIGHTS" in message
    assert str(hub_checkpoint("resnet50_fpn_v2")) in message and str(torch_home) in message
    assert "fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth" in message


def test_unknown_variant_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="resnet50_fpn_v2"):
        resolve_weights("yolo")


def test_hub_cache_file_resolves_and_loads_strictly(torch_home: Path) -> None:
    cached = hub_checkpoint(SMALL)
    cached.parent.mkdir(parents=True)
    torch.manual_seed(1)
    reference = VARIANTS[SMALL].builder(weights=None, weights_backbone=None, num_classes=91)
    torch.save(reference.state_dict(), cached)
    assert resolve_weights(SMALL, None, download=False) == cached
    det = FasterRCNNDetector(SMALL, cached, device="cpu")
    assert det.info.name == f"fasterrcnn_{SMALL}"
    w = det.model.roi_heads.box_predictor.cls_score.weight
    assert torch.equal(w, reference.roi_heads.box_predictor.cls_score.weight)
    # another variant's weights do not fit: a load error, not a silently half-initialised model
    with pytest.raises(RuntimeError, match="state_dict"):
        FasterRCNNDetector("resnet50_fpn", cached, device="cpu")


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server over a temporary folder: a real download without the internet."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_the_hash_in_the_file_name(http_dir: tuple[str, Path], tmp_path: Path) -> None:
    base, root = http_dir
    payload = b"weights"
    good = f"model-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (root / good).write_bytes(payload)
    (root / "model-00000000.pth").write_bytes(payload)
    dst = tmp_path / "cache" / good
    _download(f"{base}/{good}", dst, timeout_s=5)
    assert dst.read_bytes() == payload
    bad = tmp_path / "cache" / "model-00000000.pth"
    with pytest.raises(ValueError, match="checksum"):
        _download(f"{base}/model-00000000.pth", bad, timeout_s=5)
    assert not bad.exists() and not list(bad.parent.glob("*.partial"))


def test_failed_download_becomes_the_clear_error(torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port_closed = "http://127.0.0.1:9/fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth"
    spec = VARIANTS["resnet50_fpn_v2"]
    monkeypatch.setitem(VARIANTS, "resnet50_fpn_v2", type(spec)(spec.builder, port_closed))
    with pytest.raises(WeightsUnavailableError) as err:
        resolve_weights("resnet50_fpn_v2", None, download=True, timeout_s=2)
    assert "download" in str(err.value) and "SPOTON_FASTERRCNN_WEIGHTS" in str(err.value)


# -- the network on the CPU ---------------------------------------------------------------------------------
def test_is_a_person_detector_with_honest_info() -> None:
    det = FasterRCNNDetector(SMALL, None, device="cpu", min_size=320, max_size=320)
    assert isinstance(det, PersonDetector)
    assert det.info.name == f"fasterrcnn_{SMALL} (random weights)"
    assert (det.info.device, det.info.precision) == ("cpu", "fp32")
    det.warmup()
    assert det.warmup_s is not None and det.warmup_s > 0


def test_keeps_only_people_above_the_threshold(person_biased: FasterRCNNDetector) -> None:
    ims = frames(2)
    with torch.inference_mode():
        raw = person_biased.model([torch.from_numpy(ims[0]).permute(2, 0, 1).float() / 255])[0]
    assert (raw["labels"] == CAR).any() and (raw["labels"] == PERSON).any()  # the network does see cars
    results = person_biased.detect(ims)
    assert len(results) == 2
    for r in results:
        assert len(r) > 0
        assert r.boxes.dtype == np.float32 and r.scores.dtype == np.float32
        assert r.boxes.shape == (len(r), 4) and r.scores.shape == (len(r),)
        np.testing.assert_allclose(r.scores, P_PERSON, rtol=1e-5)  # people only, never a car's score
        assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= 320).all() and (r.boxes[:, 3] <= 240).all()


def test_threshold_above_person_scores_leaves_nothing(person_biased: FasterRCNNDetector) -> None:
    strict = FasterRCNNDetector(SMALL, None, score_threshold=P_PERSON + 0.01, device="cpu", min_size=320, max_size=320)
    strict.model.load_state_dict(person_biased.model.state_dict())
    assert [len(r) for r in strict.detect(frames(2))] == [0, 0]


def test_batched_call_matches_single_calls(person_biased: FasterRCNNDetector) -> None:
    ims = frames(3, seed=3)
    person_biased.batch_size = 2  # 3 images → chunks of 2 and 1
    together = person_biased.detect(ims)
    assert len(together) == 3
    for im, det in zip(ims, together, strict=True):
        alone = person_biased.detect([im])[0]
        np.testing.assert_allclose(det.boxes, alone.boxes, atol=1e-2)
        np.testing.assert_allclose(det.scores, alone.scores, atol=1e-4)
    assert person_biased.detect([]) == []


def test_bad_input_and_settings_are_clear_errors() -> None:
    det = FasterRCNNDetector(SMALL, None, device="cpu", min_size=320, max_size=320)
    with pytest.raises(ValueError, match="uint8"):
        det.detect([np.zeros((240, 320, 3), np.float32)])
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        FasterRCNNDetector(SMALL, None, device="cpu", precision="fp16")
    with pytest.raises(ValueError, match="batch_size"):
        FasterRCNNDetector(SMALL, None, device="cpu", batch_size=0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            FasterRCNNDetector(SMALL, None, device="cuda")


def test_from_settings_without_weights_names_the_setting(torch_home: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="SPOTON_FASTERRCNN_WEIGHTS"):
        FasterRCNNDetector.from_settings(Settings(detector="fasterrcnn", fasterrcnn_download=False))


# -- CUDA -----------------------------------------------------------------------------------------------------
@cuda
def test_cuda_fp16_batch_of_1080p_frames() -> None:
    det = FasterRCNNDetector("resnet50_fpn_v2", None, device="cuda", batch_size=4)
    assert det.info.precision == "fp16" and det.info.device.startswith("cuda")
    det.warmup()
    ims = frames(4, 1080, 1920)
    results = det.detect(ims)
    assert len(results) == 4
    assert len(det._pinned) == 4 and all(t.is_pinned() for t in det._pinned.values())
    fp32 = FasterRCNNDetector("resnet50_fpn_v2", None, device="cuda", precision="fp32", batch_size=4)
    fp32.model.load_state_dict(det.model.state_dict())
    assert [r.boxes.shape[1] for r in fp32.detect(ims)] == [4, 4, 4, 4]


@cuda
def test_cuda_out_of_memory_halves_the_batch_and_reports() -> None:
    det = FasterRCNNDetector("resnet50_fpn_v2", None, device="cuda", precision="fp32", batch_size=8)
    reasons: list[str] = []
    det.on_degraded = reasons.append
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    det.detect(frames(1, 1080, 1920))
    one = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2.5 * one / total))
    try:
        results = det.detect(frames(8, 1080, 1920))
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert len(results) == 8
    assert det.batch_size < 8 and det.oom_events >= 1
    assert reasons and "out of memory" in reasons[0]
