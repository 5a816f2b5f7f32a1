"""Binary frame messages on the tracking WebSocket.

A frame travels as one binary WebSocket message: a small fixed header, the camera id, then the raw JPEG
bytes (never base64). ``header_length`` lets a client find the JPEG without knowing every field, so later
versions can append fields without breaking old clients. All integers are big-endian.

======  =====  ===========================================================
offset  type   field
======  =====  ===========================================================
0       4s     magic ``b"SPOT"``
4       u8     version (1)
5       u8     kind (1 = JPEG frame)
6       u16    header_length: bytes before the JPEG starts
8       u64    global_frame_index
16      u64    frame_index (the camera's own frame number in its video)
24      f64    timestamp_video_s (position of the frame in its video, seconds)
32      u8     camera_id length *n*
33      n      camera_id, UTF-8
======  =====  ===========================================================
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"SPOT"
VERSION = 1
KIND_JPEG = 1
_FIXED = struct.Struct(">4sBBHQQdB")


class FrameHeaderError(ValueError):
    """A binary message that is not a SpotOn frame."""


@dataclass(slots=True, frozen=True)
class FrameHeader:
    camera_id: str
    global_frame_index: int
    frame_index: int
    timestamp_video_s: float


def pack_frame(header: FrameHeader, jpeg: bytes) -> bytes:
    cam = header.camera_id.encode("utf-8")
    if len(cam) > 255:
        raise ValueError("camera id longer than 255 bytes")
    header_length = _FIXED.size + len(cam)
    fixed = _FIXED.pack(
        MAGIC,
        VERSION,
        KIND_JPEG,
        header_length,
        header.global_frame_index,
        header.frame_index,
        header.timestamp_video_s,
        len(cam),
    )
    return b"".join((fixed, cam, jpeg))


def unpack_frame(message: bytes) -> tuple[FrameHeader, bytes]:
    """Split a binary message into its header and JPEG bytes."""
    if len(message) < _FIXED.size:
        raise FrameHeaderError("message shorter than the frame header")
    magic, _version, kind, header_length, gfi, fi, ts, cam_len = _FIXED.unpack_from(message)
    if magic != MAGIC:
        raise FrameHeaderError(f"bad magic {magic!r}")
    if kind != KIND_JPEG:
        raise FrameHeaderError(f"unknown message kind {kind}")
    if header_length < _FIXED.size + cam_len or header_length > len(message):
        raise FrameHeaderError("inconsistent header length")
    cam = message[_FIXED.size : _FIXED.size + cam_len].decode("utf-8")
    return FrameHeader(cam, gfi, fi, ts), message[header_length:]
