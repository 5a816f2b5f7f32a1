"""CLIP re-id embedder: real open_clip ViT-B/16 image tower with random weights (no download here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.core.config import Settings
from app.models.base import AppearanceEmbedder
from app.models.clip_reid import ClipReIdEmbedder, ClipWeightsUnavailableError, letterbox_batch
from app.models.registry import build_embedder


@pytest.fixture(scope="module")
def embedder() -> ClipReIdEmbedder:
    torch.manual_seed(0)
    return ClipReIdEmbedder(random_init=True, batch_size=3)


def test_embeddings_are_unit_rows_one_per_crop_and_independent_of_batching(embedder: ClipReIdEmbedder) -> None:
    assert isinstance(embedder, AppearanceEmbedder)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in [(120, 50), (60, 30), (200, 90), (40, 80)]]
    crops.append(np.zeros((0, 0, 3), np.uint8))  # a degenerate box keeps its row
    out = embedder.embed(crops)  # 5 crops in chunks of 3
    assert out.shape == (5, 512) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    alone = embedder.embed([crops[3]])
    assert np.allclose(alone[0], out[3], atol=1e-4)  # row 3 is crop 3, whatever its batch
    assert not np.allclose(out[0], out[1], atol=1e-3)
    assert embedder.embed([]).shape == (0, 512)
    assert embedder.info.name == "clip-ViT-B-16-random"


def test_letterbox_keeps_the_aspect_ratio_and_pads_with_the_mean() -> None:
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    crop = np.full((100, 50, 3), 255, np.uint8)  # tall and white
    x = letterbox_batch([crop], 224, mean, std)
    assert x.shape == (1, 3, 224, 224)
    row = x[0, 0, 112]
    white = row > 1.0
    assert int(white.sum()) == 112  # 50/100 of the side, centred
    assert int(white.nonzero()[0]) == 56
    assert torch.allclose(x[0, :, :, :40], torch.zeros(3, 224, 40), atol=0.05)  # padding normalises to ~0


def test_missing_weights_give_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClipWeightsUnavailableError, match="SPOTON_CLIP_WEIGHTS"):
        ClipReIdEmbedder(weights=tmp_path / "nope.pt")
    with pytest.raises(ClipWeightsUnavailableError, match="downloads are off"):
        ClipReIdEmbedder(download=False)
    with pytest.raises(ValueError, match="unknown CLIP model"):
        ClipReIdEmbedder(model_name="ViT-Z-99", random_init=True)
    with pytest.raises(ValueError, match="fp16"):
        ClipReIdEmbedder(random_init=True, precision="fp16")


def test_settings_select_the_clip_embedder() -> None:
    with pytest.raises(ClipWeightsUnavailableError):
        build_embedder(Settings(embedder="clip", clip_download=False))
