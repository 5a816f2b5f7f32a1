"""Embedding crops in bounded batches: the loop every appearance model shares."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from app.models.base import FloatArray, ImageBGR


def embed_in_batches(
    crops: list[ImageBGR], batch_size: int, dim: int, forward: Callable[[list[ImageBGR]], torch.Tensor]
) -> FloatArray:
    """Run ``forward`` on chunks of at most ``batch_size`` crops and return L2-normalised float32 rows.

    Chunks bound activation memory however many people a global frame holds.
    """
    out = np.empty((len(crops), dim), np.float32)
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            chunk = crops[start : start + batch_size]
            out[start : start + len(chunk)] = F.normalize(forward(chunk).float(), dim=1).cpu().numpy()
    return out
