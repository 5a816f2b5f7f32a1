"""Chooses the model strategies named in the settings."""

from __future__ import annotations

import logging

from app.core.config import Settings
from app.models.base import AppearanceEmbedder, PersonDetector

log = logging.getLogger(__name__)


def resolve_detector_choice(settings: Settings) -> str:
    """The strategy ``settings.detector`` names; ``auto`` is Faster R-CNN when CUDA is available and its
    weights resolve (the production path), else NanoDet (embedded, needs no download)."""
    if settings.detector != "auto":
        return settings.detector
    import torch

    if not torch.cuda.is_available():
        return "nanodet"
    from app.models.fasterrcnn import WeightsUnavailableError, resolve_weights

    try:
        resolve_weights(settings.fasterrcnn_variant, settings.fasterrcnn_weights, settings.fasterrcnn_download)
    except WeightsUnavailableError as exc:
        log.warning("SPOTON_DETECTOR=auto: CUDA is available but %s Using NanoDet on the CPU.", exc)
        return "nanodet"
    return "fasterrcnn"


def build_detector(settings: Settings) -> PersonDetector:
    choice = resolve_detector_choice(settings)
    if choice == "fasterrcnn":
        from app.models.fasterrcnn import FasterRCNNDetector

        return FasterRCNNDetector.from_settings(settings)
    if choice == "centernet":
        from app.models.centernet import CenterNetDetector

        return CenterNetDetector.from_settings(settings)
    from app.models.nanodet import NanoDetDetector

    return NanoDetDetector.from_settings(settings)


def build_tracker_embedder(settings: Settings) -> AppearanceEmbedder | None:
    """The descriptor the camera trackers match with, when it is not the identity embedder (None: trackers
    without appearance, or using the identity embedder's vectors)."""
    if not settings.tracker_use_appearance or settings.tracker_appearance_embedder == "identity":
        return None
    from app.models.part_colour import PartColourEmbedder

    return PartColourEmbedder()


def build_embedder(settings: Settings) -> AppearanceEmbedder:
    """``auto``/``fused``: clothing colour per body part fused with EfficientNet-Lite0; ``part_colour`` and
    ``efficientnet_lite0`` each alone; ``clip``: CLIP's image tower."""
    if settings.embedder == "clip":
        from app.models.clip_reid import ClipReIdEmbedder

        return ClipReIdEmbedder.from_settings(settings)
    from app.models.part_colour import PartColourEmbedder

    if settings.embedder == "part_colour":
        return PartColourEmbedder()
    from app.models.efficientnet_lite import EfficientNetLite0Embedder

    cnn = EfficientNetLite0Embedder.from_settings(settings)
    if settings.embedder == "efficientnet_lite0":
        return cnn
    from app.models.fused_embedder import FusedEmbedder

    w = settings.embedder_colour_weight
    if w >= 1.0:
        return PartColourEmbedder()
    if w <= 0.0:
        return cnn
    return FusedEmbedder([(PartColourEmbedder(), w), (cnn, 1.0 - w)])
