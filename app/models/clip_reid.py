"""CLIP image encoder as the appearance embedder (open_clip; ViT-B/16 by default).

CLIP's image tower, pre-trained on image–text pairs, describes clothing and carried objects in a way that
transfers across cameras without re-id training, which is why the original SpotOn used it. Only the image
tower is kept. Person crops are letterboxed onto the square model input (padding with the normalisation
mean), so a tall person is neither squashed nor cut at head and feet as CLIP's centre crop would.

Weights come from a local checkpoint (``SPOTON_CLIP_WEIGHTS``) or, when downloads are allowed, from
open_clip's hub cache by pretrained tag (``SPOTON_CLIP_PRETRAINED``, default ``openai``); otherwise loading
fails with a message saying what to set. All crops of a global frame go through in one batch (split only above
``batch_size``), in fp16 on CUDA.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
import torch
from torch import nn

from app.models.base import FloatArray, ImageBGR, ModelInfo
from app.models.batching import embed_in_batches

if TYPE_CHECKING:
    from app.core.config import Settings

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-16"
DEFAULT_PRETRAINED = "openai"


class ClipWeightsUnavailableError(RuntimeError):
    """The configured CLIP weights could not be found or fetched."""


def load_clip_image_tower(
    model_name: str = DEFAULT_MODEL,
    weights: Path | None = None,
    pretrained: str | None = DEFAULT_PRETRAINED,
    download: bool = True,
    random_init: bool = False,
) -> tuple[nn.Module, int, tuple[float, ...], tuple[float, ...]]:
    """The image tower of an open_clip model, its input size and normalisation mean/std.

    ``weights`` (a checkpoint file) wins over ``pretrained`` (an open_clip tag, fetched into its hub cache when
    ``download``); ``random_init`` builds the architecture with random weights (tests, benchmarks).
    """
    import open_clip

    if model_name not in open_clip.list_models():
        raise ValueError(f"unknown CLIP model {model_name!r}; open_clip knows e.g. ViT-B-16, ViT-B-32, ViT-L-14")
    source: str | None
    if random_init:
        source = None
    elif weights is not None:
        if not Path(weights).is_file():
            raise ClipWeightsUnavailableError(f"CLIP weights not found: SPOTON_CLIP_WEIGHTS={weights} is not a file")
        source = str(weights)
    elif pretrained and download:
        source = pretrained
    else:
        raise ClipWeightsUnavailableError(
            "CLIP weights are not available: SPOTON_CLIP_WEIGHTS is not set and downloads are off "
            "(SPOTON_CLIP_DOWNLOAD=false). Set SPOTON_CLIP_WEIGHTS to an open_clip checkpoint of "
            f"{model_name}, or use SPOTON_EMBEDDER=efficientnet_lite0."
        )
    try:
        model = open_clip.create_model(model_name, pretrained=source)
    except Exception as exc:  # offline hub, unknown tag, checkpoint of another architecture
        raise ClipWeightsUnavailableError(
            f"cannot load CLIP {model_name} weights from {source!r} ({type(exc).__name__}: {exc}). Set "
            f"SPOTON_CLIP_WEIGHTS to a local checkpoint, or use SPOTON_EMBEDDER=efficientnet_lite0."
        ) from exc
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    side = int(size[0] if isinstance(size, (tuple, list)) else size)
    mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
    return model.visual.eval(), side, mean, std


def letterbox_batch(
    crops: Sequence[ImageBGR], side: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """BGR crops → N×3×side×side normalised RGB, each scaled to fit and centred on a mean-coloured square."""
    fill = np.clip(np.asarray(mean) * 255.0, 0, 255).astype(np.uint8)
    batch = np.empty((len(crops), side, side, 3), np.uint8)
    batch[:] = fill
    for i, crop in enumerate(crops):
        h, w = crop.shape[:2]
        if h == 0 or w == 0:
            continue  # an empty box keeps its (meaningless but valid) row, so indices stay aligned
        scale = side / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        rgb = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB if crop.ndim == 2 else cv2.COLOR_BGR2RGB)
        y0, x0 = (side - nh) // 2, (side - nw) // 2
        batch[i, y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(rgb, (nw, nh), interpolation=interp)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - m) / s


class ClipReIdEmbedder:
    """`AppearanceEmbedder` on CLIP's image tower: N crops → N×D float32 L2-normalised rows."""

    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        weights: Path | None = None,
        pretrained: str | None = DEFAULT_PRETRAINED,
        download: bool = True,
        device: str = "cpu",
        batch_size: int = 64,
        precision: Literal["fp32", "fp16"] = "fp32",
        random_init: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 precision needs a CUDA device")
        t0 = time.perf_counter()
        tower, self.side, self.mean, self.std = load_clip_image_tower(
            model_name, weights, pretrained, download, random_init
        )
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        self.model = tower.to(self.device, self._dtype)
        self.batch_size = batch_size
        with torch.inference_mode():
            probe = torch.zeros(1, 3, self.side, self.side, device=self.device, dtype=self._dtype)
            self.dim = int(self.model(probe).shape[-1])
        name = f"clip-{model_name}" + ("-random" if random_init else "")
        self.info = ModelInfo(name=name, device=str(self.device), precision=precision)
        log.info("CLIP %s image tower loaded in %.2f s on %s (%s)", model_name, time.perf_counter() - t0,
                 self.device, precision)

    @classmethod
    def from_settings(cls, settings: Settings) -> ClipReIdEmbedder:
        """CUDA in fp16 when available, else CPU in fp32."""
        cuda = torch.cuda.is_available()
        if settings.torch_threads > 0:
            torch.set_num_threads(settings.torch_threads)
        return cls(
            model_name=settings.clip_model,
            weights=settings.clip_weights,
            pretrained=settings.clip_pretrained,
            download=settings.clip_download,
            device="cuda" if cuda else "cpu",
            batch_size=settings.embedder_batch_size,
            precision="fp16" if cuda else "fp32",
        )

    def embed(self, crops: list[ImageBGR]) -> FloatArray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)

        def forward(chunk: list[ImageBGR]) -> torch.Tensor:
            return self.model(letterbox_batch(chunk, self.side, self.mean, self.std).to(self.device, self._dtype))

        return embed_in_batches(crops, self.batch_size, self.dim, forward)

    def warmup(self) -> None:
        self.embed([np.full((128, 64, 3), 127, np.uint8)] * 2)
