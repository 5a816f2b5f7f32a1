"""JPEG encoders. Both use libjpeg-turbo with 4:2:0 chroma subsampling, which `spoton bench jpeg` measured
~45 % faster and ~18 % smaller than 4:4:4 at 640×480 (docs/performance.md); torchvision's CPU encoder was
~2.5× slower. Both release the GIL, so the encode pool runs them in parallel with the models."""

from __future__ import annotations

from typing import Protocol

import cv2
import simplejpeg

from app.models.base import ImageBGR


class FrameEncoder(Protocol):
    def encode(self, image: ImageBGR, quality: int) -> bytes: ...


class TurboJpegEncoder:
    """libjpeg-turbo through simplejpeg; takes BGR directly so there is no colour conversion copy."""

    def encode(self, image: ImageBGR, quality: int) -> bytes:
        q = max(1, min(100, int(quality)))
        return bytes(
            simplejpeg.encode_jpeg(image, quality=q, colorspace="BGR", fastdct=True, colorsubsampling="420")
        )


class OpenCvJpegEncoder:
    """OpenCV's ``imencode`` (libjpeg-turbo inside the wheel, 4:2:0)."""

    def encode(self, image: ImageBGR, quality: int) -> bytes:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, max(1, min(100, int(quality)))])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return bytes(buf.tobytes())


def build_encoder(name: str) -> FrameEncoder:
    if name == "opencv":
        return OpenCvJpegEncoder()
    if name == "simplejpeg":
        return TurboJpegEncoder()
    raise ValueError(f"unknown JPEG encoder '{name}' (simplejpeg | opencv)")
