"""JPEG encoding with libjpeg-turbo (simplejpeg), the cheapest CPU encoder we measured in Python."""

from __future__ import annotations

from typing import Protocol

import simplejpeg

from app.models.base import ImageBGR


class FrameEncoder(Protocol):
    def encode(self, image: ImageBGR, quality: int) -> bytes: ...


class TurboJpegEncoder:
    """libjpeg-turbo through simplejpeg; takes BGR directly so there is no colour conversion copy."""

    def encode(self, image: ImageBGR, quality: int) -> bytes:
        q = max(1, min(100, int(quality)))
        return bytes(simplejpeg.encode_jpeg(image, quality=q, colorspace="BGR", fastdct=True))
