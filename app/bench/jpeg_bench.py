"""``spoton bench jpeg``: the JPEG encoders we could use, on the same frames — why simplejpeg is the default."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from app.models.base import ImageBGR

Encoder = Callable[[ImageBGR, int], bytes]


def available_encoders() -> dict[str, Encoder]:
    import simplejpeg

    encoders: dict[str, Encoder] = {
        "simplejpeg (libjpeg-turbo, fastdct, 4:4:4)": lambda im, q: bytes(
            simplejpeg.encode_jpeg(im, quality=q, colorspace="BGR", fastdct=True)
        ),
        "simplejpeg (libjpeg-turbo, fastdct, 4:2:0)": lambda im, q: bytes(
            simplejpeg.encode_jpeg(im, quality=q, colorspace="BGR", fastdct=True, colorsubsampling="420")
        ),
        "opencv imencode (4:2:0)": lambda im, q: cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes(),
    }
    try:
        import torch
        from torchvision.io import encode_jpeg

        def tv(im: ImageBGR, q: int) -> bytes:
            t = torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1])).permute(2, 0, 1)
            return bytes(encode_jpeg(t, quality=q).numpy().tobytes())

        encoders["torchvision encode_jpeg (cpu)"] = tv
    except Exception:  # torchvision without its image codecs
        pass
    try:
        from turbojpeg import TurboJPEG  # needs the system libturbojpeg

        tj = TurboJPEG()
        encoders["PyTurboJPEG"] = lambda im, q: bytes(tj.encode(im, quality=q))
    except Exception:
        pass
    return encoders


def run_jpeg_bench(image: ImageBGR, repeats: int = 30, quality: int = 80) -> list[dict[str, Any]]:
    rows = []
    sizes = {"640x480": (640, 480), "1920x1080": (1920, 1080)}
    for label, wh in sizes.items():
        im = np.ascontiguousarray(cv2.resize(image, wh, interpolation=cv2.INTER_LINEAR), dtype=np.uint8)
        for name, enc in available_encoders().items():
            enc(im, quality)
            times = []
            out = b""
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = enc(im, quality)
                times.append((time.perf_counter() - t0) * 1000)
            rows.append(
                {
                    "encoder": name,
                    "resolution": label,
                    "quality": quality,
                    "ms_median": round(statistics.median(times), 2),
                    "kb": round(len(out) / 1024, 1),
                }
            )
    return rows


def print_report(rows: list[dict[str, Any]]) -> None:
    print(f"{'encoder':44} {'resolution':>10} {'ms (median)':>12} {'KB':>7}")
    for r in rows:
        print(f"{r['encoder']:44} {r['resolution']:>10} {r['ms_median']:>12} {r['kb']:>7}")
