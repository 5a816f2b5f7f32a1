from __future__ import annotations

import cv2
import numpy as np
import pytest

from app.services.frame_encoder import build_encoder
from app.services.frame_processor import CameraResult, encode_frame
from app.services.jpeg_quality import QualityController
from app.utils.wire import unpack_frame


@pytest.mark.parametrize("name", ["simplejpeg", "opencv"])
def test_encoders_produce_decodable_jpeg_that_shrinks_with_quality(name: str) -> None:
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), (5, 5), 0)
    enc = build_encoder(name)
    hi, lo = enc.encode(img, 90), enc.encode(img, 30)
    assert len(lo) < len(hi)
    back = cv2.imdecode(np.frombuffer(hi, np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == img.shape
    assert np.abs(back.astype(int) - img.astype(int)).mean() < 12


def test_unknown_encoder_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="simplejpeg"):
        build_encoder("png")


def test_low_variant_is_downscaled_and_carries_the_same_header() -> None:
    img = np.full((480, 640, 3), 128, np.uint8)
    cam = CameraResult("c2", 17, 2.4, [], img)
    enc = encode_frame(build_encoder("simplejpeg"), 5, cam, 80, low_scale=0.5, low_quality=40)
    assert enc.low is not None
    h1, _ = unpack_frame(enc.message)
    h2, j2 = unpack_frame(enc.low)
    assert h1 == h2 and h1.camera_id == "c2" and h1.frame_index == 17 and h1.global_frame_index == 5
    assert cv2.imdecode(np.frombuffer(j2, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
    assert encode_frame(build_encoder("simplejpeg"), 5, cam, 80).low is None


def test_quality_steps_down_under_load_and_recovers_after_calm() -> None:
    qc = QualityController(start=80, low=50, high=85, step=5, calm_intervals=3)
    assert [qc.update(3) for _ in range(8)] == [75, 70, 65, 60, 55, 50, 50, 50]
    assert [qc.update(0) for _ in range(6)] == [50, 50, 55, 55, 55, 60]
    with pytest.raises(ValueError):
        QualityController(80, 90, 60)
