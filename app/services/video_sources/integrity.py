"""Telling a video that ended from one that broke off.

A decoder that stops returning frames looks the same whether the video is over or its file is truncated or
corrupt. The container's frame count tells them apart: a video that stops well short of it is reported, with
the camera and the file, instead of silently becoming a shorter camera (docs/environments.md, "Bad videos").
"""

from __future__ import annotations

SHORT_TOLERANCE = 0.02
"""Headers may round a little (duration × fps): stopping within 2 % (and 2 frames) of the count is an end."""


def early_end(camera_id: str, file: str, decoded: int, header_frames: int) -> str | None:
    """Why the stream must fail, or None when it simply ended."""
    if decoded == 0:
        return f"camera '{camera_id}': no frame could be decoded from {file} (not a video, or corrupt)"
    if header_frames > 0 and header_frames - decoded > max(2, SHORT_TOLERANCE * header_frames):
        return f"camera '{camera_id}': {file} stopped after {decoded} of {header_frames} frames (truncated or corrupt)"
    return None
