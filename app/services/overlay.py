"""Boxes and labels drawn into a JPEG, in the colours the viewer uses (for MJPEG ``?overlay=1``)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

GOLDEN_ANGLE = 137.508


def colour_of(global_id: int) -> tuple[int, int, int]:
    """BGR colour of a global id: hues a golden angle apart, so neighbouring ids differ (viewer.js: same rule)."""
    r, g, b = colorsys.hls_to_rgb(((global_id * GOLDEN_ANGLE) % 360) / 360.0, 0.5, 0.75)
    return int(b * 255), int(g * 255), int(r * 255)


def draw_tracks(jpeg: bytes, tracks: Sequence[dict[str, Any]], quality: int = 80) -> bytes:
    """The JPEG with each track's box and ``#global_id`` label drawn in; the input back if it cannot be decoded."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return jpeg
    h, w = image.shape[:2]
    thick = max(2, round(min(h, w) / 240))
    for t in tracks:
        try:
            x1, y1, x2, y2 = (round(float(v)) for v in t["bbox_xyxy"])
            gid = int(t["global_id"])
        except (KeyError, TypeError, ValueError):
            continue
        colour = colour_of(gid)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, thick)
        label = f"#{gid}"
        scale = max(0.45, min(h, w) / 900)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(0, y1 - th - base - 2)
        cv2.rectangle(image, (x1, top), (x1 + tw + 4, top + th + base + 2), colour, -1)
        cv2.putText(image, label, (x1 + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    ok, out = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return out.tobytes() if ok else jpeg


def pad_jpeg(jpeg: bytes, box: Any, quality: int = 80) -> bytes:
    """The JPEG centred on black bars to ``box.canvas`` (a `Letterbox`: 16:9 for the original frontend)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return jpeg
    h, w = image.shape[:2]
    scale = w / box.width  # 1, or less for a constrained reader's downscaled variant
    cw, ch = max(w, round(box.canvas[0] * scale)), max(h, round(box.canvas[1] * scale))
    ox, oy = (cw - w) // 2, (ch - h) // 2
    canvas = np.zeros((ch, cw, 3), np.uint8)
    canvas[oy : oy + h, ox : ox + w] = image
    ok, out = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return out.tobytes() if ok else jpeg
