"""``spoton bench detector``: milliseconds per image and images/s of every available detector.

Each case (detector × precision × batch size × resolution) builds the detector, warms it up, then times
``detect`` on a batch of identical frames — one call per global frame of ``batch`` cameras, as the pipeline
calls it — until ``iterations`` calls are done or ``max_seconds`` have passed (at least ``min_iterations``).
Reported per image: median and p95 of call time / batch, and images/s = batch / median call time. On CUDA
the peak allocated GPU memory of the case is reported too. Faster R-CNN without its COCO weights runs with
random weights (marked), which does not change its speed. Timings depend on what else runs on the machine.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from app.core.config import Settings
from app.models.base import ImageBGR, PersonDetector

DETECTORS = ("nanodet", "centernet", "fasterrcnn")
RESOLUTIONS: dict[str, tuple[int, int]] = {
    "1080p": (1920, 1080),
    "720p": (1280, 720),
    "576p": (768, 576),
    "480p": (640, 480),
}


@dataclass(slots=True)
class BenchCase:
    detector: str
    model: str
    weights: str
    device: str
    precision: str
    batch: int
    resolution: str
    iterations: int
    ms_per_call_median: float
    ms_per_image_median: float
    ms_per_image_p95: float
    images_per_s: float
    peak_gpu_mb: float | None


def parse_resolution(text: str) -> tuple[str, tuple[int, int]]:
    """``1080p`` (a known name) or ``WIDTHxHEIGHT``."""
    if text in RESOLUTIONS:
        return text, RESOLUTIONS[text]
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"resolution {text!r}: use one of {', '.join(RESOLUTIONS)} or WIDTHxHEIGHT") from None
    if w < 32 or h < 32:
        raise ValueError(f"resolution {text!r} is too small")
    return text, (w, h)


def synthetic_frame(width: int, height: int, seed: int = 0) -> ImageBGR:
    """A deterministic textured frame (smooth gradients plus noise), so no data file is needed."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xs / width * 200, ys / height * 200, (xs + ys) / (width + height) * 200], axis=2)
    noise = rng.normal(0, 20, (height, width, 3))
    return np.clip(base + noise + 20, 0, 255).astype(np.uint8)


def time_detector(
    det: PersonDetector, images: list[ImageBGR], iterations: int, max_seconds: float, min_iterations: int = 3
) -> list[float]:
    """Wall seconds of each ``detect`` call (after one untimed call)."""
    det.detect(images)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iterations:
        t0 = time.perf_counter()
        det.detect(images)
        times.append(time.perf_counter() - t0)
        if len(times) >= min_iterations and time.perf_counter() - start > max_seconds:
            break
    return times


def _builders(settings: Settings, detector: str, precisions: list[str]) -> list[tuple[str, Callable[[int], Any]]]:
    """(weights label, batch size → detector) per precision the detector runs in here."""
    if detector == "nanodet":
        from app.models.nanodet import NanoDetDetector, available_variants

        def nanodet(runtime: str, precision: str, shape: str) -> Callable[[int], Any]:
            update = {"nanodet_runtime": runtime, "nanodet_precision": precision, "nanodet_input": shape}
            return lambda _b: NanoDetDetector.from_settings(settings.model_copy(update=update))

        chosen = [(rt, p) for rt, p in available_variants() if not precisions or p in precisions]
        return [
            (f"shipped, {rt}, input={shape}", nanodet(rt, p, shape)) for rt, p in chosen for shape in ("fit", "square")
        ]
    if detector == "centernet":
        from app.models.centernet import CenterNetDetector

        return [("shipped", lambda _b: CenterNetDetector.from_settings(settings))]
    import torch

    from app.models.fasterrcnn import FasterRCNNDetector, WeightsUnavailableError, resolve_weights

    try:
        weights = resolve_weights(settings.fasterrcnn_variant, settings.fasterrcnn_weights, download=False)
        label = "coco"
    except WeightsUnavailableError:
        weights, label = None, "random"
    cuda = settings.fasterrcnn_device != "cpu" and torch.cuda.is_available()
    wanted = precisions or (["fp32", "fp16"] if cuda else ["fp32"])
    device = "cuda" if cuda else "cpu"

    def fasterrcnn(precision: str) -> Callable[[int], Any]:
        def build(batch: int) -> FasterRCNNDetector:
            return FasterRCNNDetector(
                settings.fasterrcnn_variant, weights, settings.fasterrcnn_score_threshold, device, precision, batch,
                settings.fasterrcnn_min_size, settings.fasterrcnn_max_size,
            )

        return build

    return [(label, fasterrcnn(p)) for p in wanted if p == "fp32" or cuda]


def run_detector_bench(
    settings: Settings,
    detectors: list[str] | None = None,
    batches: list[int] | None = None,
    resolutions: list[str] | None = None,
    precisions: list[str] | None = None,
    iterations: int = 20,
    max_seconds: float = 20.0,
    on_case: Callable[[BenchCase], None] | None = None,
) -> list[BenchCase]:
    names = list(detectors or DETECTORS)
    unknown = sorted(set(names) - set(DETECTORS))
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; choose from {', '.join(DETECTORS)}")
    sizes = [parse_resolution(r) for r in (resolutions or ["1080p", "576p"])]
    batch_sizes = batches or [1, 4]
    if any(b < 1 for b in batch_sizes):
        raise ValueError("batch sizes must be at least 1")
    cases: list[BenchCase] = []
    for name in names:
        for weights, build in _builders(settings, name, list(precisions or [])):
            for batch in batch_sizes:
                det = build(batch)
                det.warmup()
                for label, (w, h) in sizes:
                    case = _measure(name, weights, det, batch, label, synthetic_frame(w, h), iterations, max_seconds)
                    cases.append(case)
                    if on_case is not None:
                        on_case(case)
                del det
    return cases


def _measure(
    name: str, weights: str, det: PersonDetector, batch: int, label: str, frame: ImageBGR,
    iterations: int, max_seconds: float,
) -> BenchCase:
    peak: float | None = None
    cuda = det.info.device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    times = time_detector(det, [frame] * batch, iterations, max_seconds)
    if cuda:
        peak = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    per_image = sorted(t / batch for t in times)
    median_call = statistics.median(times)
    return BenchCase(
        detector=name, model=det.info.name, weights=weights, device=det.info.device, precision=det.info.precision,
        batch=batch, resolution=label, iterations=len(times),
        ms_per_call_median=round(1000 * median_call, 2),
        ms_per_image_median=round(1000 * statistics.median(per_image), 2),
        ms_per_image_p95=round(1000 * float(np.percentile(per_image, 95)), 2),
        images_per_s=round(batch / median_call, 2), peak_gpu_mb=peak,
    )


def table(cases: list[BenchCase]) -> str:
    lines = [
        "| detector | model | weights | device | precision | batch | resolution | ms/image median | ms/image p95 "
        "| images/s | peak GPU MB | calls |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| {c.detector} | {c.model} | {c.weights} | {c.device} | {c.precision} | {c.batch} | {c.resolution} | "
            f"{c.ms_per_image_median:.1f} | {c.ms_per_image_p95:.1f} | {c.images_per_s:.2f} | "
            f"{'-' if c.peak_gpu_mb is None else f'{c.peak_gpu_mb:.0f}'} | {c.iterations} |"
        )
    return "\n".join(lines)


def to_json(cases: list[BenchCase], settings: Settings) -> dict[str, Any]:
    import torch

    return {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "settings": {"onnx_threads": settings.onnx_threads, "torch_threads": settings.torch_threads},
        "cases": [asdict(c) for c in cases],
    }
