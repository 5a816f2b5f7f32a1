"""Which detector runs (``SPOTON_DETECTOR``), and what ``/health`` says about it: the weights-missing
failure of Faster R-CNN, warm-up time, device and precision, degradation reported at run time, and the GPU
summary."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.core.lifecycle import Components, ComponentState, gpu_summary
from app.main import create_app
from app.models.centernet import CenterNetDetector
from app.models.fasterrcnn import VARIANTS, FasterRCNNDetector, WeightsUnavailableError, hub_checkpoint
from app.models.nanodet import NanoDetDetector
from app.models.registry import build_detector, resolve_detector_choice
from app.services.environment_catalog import EnvironmentCatalog

SMALL = "mobilenet_v3_large_320_fpn"


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache, so that nothing a developer downloaded leaks in."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def offline(**kw: object) -> Settings:
    return Settings(fasterrcnn_download=False, **kw)  # type: ignore[arg-type]


def test_explicit_choices_build_their_strategy(torch_home: Path) -> None:
    assert isinstance(build_detector(offline(detector="nanodet")), NanoDetDetector)
    assert isinstance(build_detector(offline(detector="centernet")), CenterNetDetector)
    with pytest.raises(WeightsUnavailableError, match="SPOTON_FASTERRCNN_WEIGHTS"):
        build_detector(offline(detector="fasterrcnn"))


def test_auto_without_usable_faster_rcnn_is_nanodet(torch_home: Path) -> None:
    # no CUDA here, or CUDA but no weights in the (empty) hub cache and downloads off: NanoDet either way
    assert resolve_detector_choice(offline(detector="auto")) == "nanodet"
    assert isinstance(build_detector(offline(detector="auto")), NanoDetDetector)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_with_cuda_and_cached_weights_is_faster_rcnn(torch_home: Path) -> None:
    cached = hub_checkpoint(SMALL)
    cached.parent.mkdir(parents=True)
    torch.save(VARIANTS[SMALL].builder(weights=None, weights_backbone=None, num_classes=91).state_dict(), cached)
    s = offline(detector="auto", fasterrcnn_variant=SMALL)
    assert resolve_detector_choice(s) == "fasterrcnn"
    det = build_detector(s)
    assert isinstance(det, FasterRCNNDetector) and det.info.device.startswith("cuda")
    assert det.info.precision == "fp16"


def test_unknown_detector_setting_is_rejected() -> None:
    with pytest.raises(ValueError, match="detector"):
        Settings(detector="yolo")  # type: ignore[arg-type]


def _wait_loaded(client: TestClient, timeout: float = 120.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = client.get("/health")
        body: dict[str, object] = r.json()
        if body["status"] != "starting":
            return {"code": r.status_code, **body}
        time.sleep(0.2)
    raise TimeoutError("components still loading")


@pytest.fixture
def no_weights_client(torch_home: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = offline(detector="fasterrcnn", environments_dir=tmp_path / "envs", data_dir=tmp_path / "var")
    with TestClient(create_app(settings)) as c:
        yield c


def test_health_says_why_faster_rcnn_cannot_start(no_weights_client: TestClient) -> None:
    body = _wait_loaded(no_weights_client)
    assert body["code"] == 503 and body["status"] == "unhealthy"
    det = body["components"]["detector"]  # type: ignore[index]
    assert det["state"] == "failed"
    assert "WeightsUnavailableError" in det["detail"] and "SPOTON_FASTERRCNN_WEIGHTS" in det["detail"]
    assert "Traceback" not in det["detail"]


def test_loaded_detector_reports_warmup_device_precision_and_degradation(torch_home: Path, tmp_path: Path) -> None:
    cached = hub_checkpoint(SMALL)
    cached.parent.mkdir(parents=True)
    torch.save(VARIANTS[SMALL].builder(weights=None, weights_backbone=None, num_classes=91).state_dict(), cached)
    settings = offline(detector="fasterrcnn", fasterrcnn_variant=SMALL, fasterrcnn_device="cpu",
                       environments_dir=tmp_path / "envs")
    components = Components(settings, EnvironmentCatalog())
    components.load_all()
    h = components.health["detector"]
    assert h.state is ComponentState.READY, h.detail
    assert (h.device, h.info["precision"], h.info["name"]) == ("cpu", "fp32", f"fasterrcnn_{SMALL}")
    assert h.info["warmup_s"] > 0 and h.info["selected"] == "fasterrcnn"
    assert components.overall() == "healthy"
    det = components.detector
    assert isinstance(det, FasterRCNNDetector) and det.on_degraded is not None
    det.on_degraded("CUDA out of memory: batch size halved to 2")
    assert components.overall() == "degraded"
    assert h.state is ComponentState.READY and "halved" in h.detail and components.essentials_ready()


def test_gpu_summary_shape() -> None:
    g = gpu_summary()
    if not torch.cuda.is_available():
        assert g == {"available": False}
        return
    assert g["available"] is True
    for key in ("memory_allocated_mb", "memory_reserved_mb", "memory_total_mb", "name"):
        assert key in g
    try:
        import pynvml  # noqa: F401
    except ImportError:
        return
    assert "utilization_gpu_percent" in g or "utilization_error" in g
