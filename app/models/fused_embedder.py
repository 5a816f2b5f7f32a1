"""Several appearance descriptors as one vector, so one gallery and one cosine compare them all.

Each part is L2-normalised and scaled by the square root of its weight (weights summing to 1), so the cosine of
two fused vectors is the weighted mean of the parts' cosines: clothing colour per body part as the main cue,
ImageNet features as a second one (issue 10), compared in a single FAISS search.
"""

from __future__ import annotations

import numpy as np

from app.models.base import AppearanceEmbedder, FloatArray, ImageBGR, ModelInfo


class FusedEmbedder:
    """`AppearanceEmbedder` concatenating weighted, normalised descriptors of other embedders."""

    def __init__(self, parts: list[tuple[AppearanceEmbedder, float]]) -> None:
        if not parts or any(w <= 0 for _, w in parts):
            raise ValueError("a fused embedder needs at least one part, each with a weight > 0")
        total = sum(w for _, w in parts)
        self.parts = [(m, float(np.sqrt(w / total))) for m, w in parts]
        self.dim = sum(m.dim for m, _ in parts)
        names = "+".join(m.info.name for m, _ in parts)
        device = parts[-1][0].info.device
        self.info = ModelInfo(name=names, device=device, precision=parts[-1][0].info.precision)

    def embed(self, crops: list[ImageBGR]) -> FloatArray:
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        blocks = []
        for model, scale in self.parts:
            v = np.asarray(model.embed(crops), np.float32)
            norm = np.linalg.norm(v, axis=1, keepdims=True)
            blocks.append(np.where(norm > 0, v / np.maximum(norm, 1e-12), 0.0) * scale)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def warmup(self) -> None:
        for model, _ in self.parts:
            model.warmup()
