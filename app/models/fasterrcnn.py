"""Faster R-CNN person detector (torchvision), the GPU strategy.

All cameras of a global frame go through one batched forward pass (up to ``batch_size`` images); frames are
uploaded as uint8 from pinned host buffers with non-blocking copies and converted to float on the device; on
CUDA the model runs under fp16 autocast by default. On CUDA out-of-memory the batch is halved and the chunk
retried, and the degradation is reported through ``on_degraded`` instead of failing the task.

Weights are torchvision's COCO checkpoints, resolved by ``resolve_weights``: the configured file, else the
torch hub cache, else a download when online; otherwise a ``WeightsUnavailableError`` that names the setting.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision.models.detection as tvd

from app.models.base import Detections, ImageBGR, ModelInfo

if TYPE_CHECKING:
    from app.core.config import Settings

log = logging.getLogger(__name__)

PERSON = 1
"""COCO category id of *person* in torchvision's 91-entry label space."""
MAX_DETECTIONS = 300
"""Detections per image over all 80 classes before the person filter."""
DOWNLOAD_TIMEOUT_S = 10.0
WARMUP_SHAPE = (1080, 1920, 3)
"""Dummy frames for the warm-up: the model resizes to its own size anyway, 16:9 gives the common shapes."""


@dataclass(frozen=True, slots=True)
class Variant:
    builder: Callable[..., tvd.FasterRCNN]
    url: str

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


VARIANTS: dict[str, Variant] = {
    "resnet50_fpn_v2": Variant(
        tvd.fasterrcnn_resnet50_fpn_v2, tvd.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1.url
    ),
    "resnet50_fpn": Variant(tvd.fasterrcnn_resnet50_fpn, tvd.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.url),
    "mobilenet_v3_large_fpn": Variant(
        tvd.fasterrcnn_mobilenet_v3_large_fpn, tvd.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1.url
    ),
    "mobilenet_v3_large_320_fpn": Variant(
        tvd.fasterrcnn_mobilenet_v3_large_320_fpn, tvd.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1.url
    ),
}


class WeightsUnavailableError(FileNotFoundError):
    """The COCO weights of the configured variant could not be found or fetched."""


def hub_checkpoint(variant: str) -> Path:
    """Where torch hub keeps (or would keep) the variant's weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _variant(variant).file_name


def resolve_weights(
    variant: str, configured: Path | None = None, download: bool = True, timeout_s: float = DOWNLOAD_TIMEOUT_S
) -> Path:
    """The weights file to load: ``configured`` (must exist), else the hub cache, else a download into it."""
    spec = _variant(variant)
    if configured is not None:
        if Path(configured).is_file():
            return Path(configured)
        raise WeightsUnavailableError(
            f"Faster R-CNN weights not found: SPOTON_FASTERRCNN_WEIGHTS={configured} is not a file. Point it at "
            f"torchvision's {spec.file_name} ({spec.url})."
        )
    cached = hub_checkpoint(variant)
    if cached.is_file():
        return cached
    why = "downloads are off (SPOTON_FASTERRCNN_DOWNLOAD=false)"
    if download:
        try:
            _download(spec.url, cached, timeout_s)
            return cached
        except Exception as exc:  # offline, DNS, TLS, HTTP error, bad checksum: all end in the same advice
            why = f"the download from {spec.url} failed ({type(exc).__name__}: {exc})"
    raise WeightsUnavailableError(
        f"Faster R-CNN weights ({spec.file_name}) are not available: SPOTON_FASTERRCNN_WEIGHTS is not set, they are "
        f"not in the torch hub cache ({cached}) and {why}. Set SPOTON_FASTERRCNN_WEIGHTS to the .pth file (from "
        f"{spec.url}), or put it in the hub cache, or use SPOTON_DETECTOR=nanodet."
    )


def _variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown Faster R-CNN variant {name!r}; choose one of {sorted(VARIANTS)}") from None


def _download(url: str, dst: Path, timeout_s: float) -> None:
    """Fetch into ``dst`` atomically; torchvision file names end in ``-<sha256 prefix>.pth``, which is checked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dst.parent, suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout_s) as r:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
        m = re.search(r"-([0-9a-f]{6,})\.pth$", dst.name)
        if m and not digest.hexdigest().startswith(m.group(1)):
            raise ValueError(f"checksum mismatch: sha256 {digest.hexdigest()[:12]}…, expected {m.group(1)}…")
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


class FasterRCNNDetector:
    """torchvision Faster R-CNN keeping only the *person* class; implements ``PersonDetector``.

    ``weights=None`` builds the network with random weights (speed measurements and tests only).
    """

    info: ModelInfo

    def __init__(
        self,
        variant: str = "resnet50_fpn_v2",
        weights: Path | None = None,
        score_threshold: float = 0.5,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 4,
        min_size: int = 0,
        max_size: int = 0,
    ) -> None:
        spec = _variant(variant)
        if not 0.0 <= score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), not {score_threshold}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cuda", "cpu"):
            raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', not {device!r}")
        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("SPOTON_FASTERRCNN_DEVICE=cuda but CUDA is not available")
        if precision == "auto":
            precision = "fp16" if device == "cuda" else "fp32"
        if precision not in ("fp16", "fp32"):
            raise ValueError(f"precision must be 'auto', 'fp16' or 'fp32', not {precision!r}")
        if precision == "fp16" and device != "cuda":
            raise ValueError("fp16 needs CUDA; use SPOTON_FASTERRCNN_PRECISION=fp32 on the CPU")

        # other classes must not crowd people out of the per-image cap (torchvision's default is 100)
        kwargs: dict[str, Any] = {"box_score_thresh": score_threshold, "box_detections_per_img": MAX_DETECTIONS}
        if min_size > 0:
            kwargs["min_size"] = min_size
        if max_size > 0:
            kwargs["max_size"] = max_size
        model = spec.builder(weights=None, weights_backbone=None, num_classes=91, **kwargs)
        if weights is not None:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)  # strict: a wrong file fails here, not with silent garbage
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.variant = variant
        self.weights = weights
        self.score_threshold = float(score_threshold)
        self.precision = precision
        self.batch_size = batch_size
        self.configured_batch_size = batch_size
        self.oom_events = 0
        self.images_dropped = 0
        self.on_degraded: Callable[[str], None] | None = None
        self.warmup_s: float | None = None
        self._pinned: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}
        self.info = ModelInfo(
            name=f"fasterrcnn_{variant}" + ("" if weights is not None else " (random weights)"),
            device=str(self.device) if self.device.type == "cpu" else f"cuda:{torch.cuda.current_device()}",
            precision=precision,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FasterRCNNDetector:
        weights = resolve_weights(
            settings.fasterrcnn_variant, settings.fasterrcnn_weights, download=settings.fasterrcnn_download
        )
        return cls(
            variant=settings.fasterrcnn_variant,
            weights=weights,
            score_threshold=settings.fasterrcnn_score_threshold,
            device=settings.fasterrcnn_device,
            precision=settings.fasterrcnn_precision,
            batch_size=settings.fasterrcnn_batch_size,
            min_size=settings.fasterrcnn_min_size,
            max_size=settings.fasterrcnn_max_size,
        )

    # -- public -------------------------------------------------------------------------------------
    def warmup(self) -> None:
        """Dummy batches of the configured size (CUDA: twice, the first pays for kernel selection)."""
        t0 = time.perf_counter()
        n = self.batch_size if self.device.type == "cuda" else 1
        dummy = [np.zeros(WARMUP_SHAPE, np.uint8)] * n
        for _ in range(2 if self.device.type == "cuda" else 1):
            self.detect(dummy)
        self.warmup_s = time.perf_counter() - t0

    def detect(self, images: list[ImageBGR]) -> list[Detections]:
        out: list[Detections] = []
        i = 0
        while i < len(images):
            chunk = images[i : i + self.batch_size]
            try:
                out.extend(self._forward(chunk))
            except torch.OutOfMemoryError:
                if self.device.type != "cuda":
                    raise
                self.oom_events += 1
                torch.cuda.synchronize()  # in-flight copies from the pinned buffers finish before their reuse
                torch.cuda.empty_cache()
                if self.batch_size > 1:
                    self.batch_size = max(1, self.batch_size // 2)
                    self._degraded(f"CUDA out of memory: batch size halved to {self.batch_size}")
                    continue  # retry the same images with the smaller batch
                self.images_dropped += len(chunk)
                self._degraded(
                    f"CUDA out of memory at batch size 1: {self.images_dropped} image(s) so far without detections"
                )
                out.extend(Detections() for _ in chunk)
            i += len(chunk)
        return out

    # -- internals ----------------------------------------------------------------------------------
    def _degraded(self, reason: str) -> None:
        log.warning("detector degraded: %s", reason)
        if self.on_degraded is not None:
            self.on_degraded(reason)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp16":
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def _upload(self, images: list[ImageBGR]) -> Iterator[torch.Tensor]:
        """uint8 HWC BGR → float CHW RGB 0..1 on the device; on CUDA through reused pinned buffers."""
        for k, im in enumerate(images):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"expected H×W×3 uint8 BGR images, got shape {im.shape} dtype {im.dtype}")
            if self.device.type == "cuda":
                key = (k, tuple(im.shape))
                buf = self._pinned.get(key)
                if buf is None:
                    buf = self._pinned[key] = torch.empty(im.shape, dtype=torch.uint8, pin_memory=True)
                buf.numpy()[...] = im
                t = buf.to(self.device, non_blocking=True)
            else:
                t = torch.from_numpy(np.ascontiguousarray(im))
            yield t.permute(2, 0, 1).flip(0).float().div_(255.0)

    def _forward(self, images: list[ImageBGR]) -> list[Detections]:
        with torch.inference_mode():
            tensors = list(self._upload(images))
            with self._autocast():
                preds = self.model(tensors)
            results = []
            for p in preds:
                keep = (p["labels"] == PERSON) & (p["scores"] >= self.score_threshold)
                boxes = p["boxes"][keep].float().cpu().numpy().astype(np.float32)
                scores = p["scores"][keep].float().cpu().numpy().astype(np.float32)
                results.append(Detections(boxes.reshape(-1, 4), scores.reshape(-1)))
        return results
