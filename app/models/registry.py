"""Chooses the model strategies named in the settings."""

from __future__ import annotations

from app.core.config import Settings
from app.models.base import AppearanceEmbedder, PersonDetector


def build_detector(settings: Settings) -> PersonDetector:
    """``auto`` and ``nanodet`` give NanoDet on the CPU (the only strategy that needs no download)."""
    from app.models.nanodet import NanoDetDetector

    return NanoDetDetector.from_settings(settings)


def build_embedder(settings: Settings) -> AppearanceEmbedder:
    from app.models.efficientnet_lite import EfficientNetLite0Embedder

    return EfficientNetLite0Embedder.from_settings(settings)
