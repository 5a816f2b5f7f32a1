"""Bytes on the live-state bus, and the summaries derived from a ``tracking_update``.

Bus record: one kind byte, then
``F``: ``>dIIH`` (produced_at, len(data), len(low), len(camera id)), camera id (UTF-8), data, low;
``T``: the JSON text (UTF-8); ``C``: the close reason (UTF-8, empty when the task ended).
The JSON text is forwarded as is: followers send clients exactly the bytes the task's process made.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from app.stores.live_state import LiveClose, LiveEvent, LiveFrame, LiveText

_FRAME, _TEXT, _CLOSE = b"F", b"T", b"C"
_HEAD = struct.Struct(">dIIH")


def encode_event(event: LiveEvent) -> bytes:
    if isinstance(event, LiveFrame):
        cam = event.camera_id.encode()
        low = event.low or b""
        return b"".join((_FRAME, _HEAD.pack(event.produced_at, len(event.data), len(low), len(cam)), cam,
                         event.data, low))
    if isinstance(event, LiveText):
        return _TEXT + event.text.encode()
    return _CLOSE + event.reason.encode()


def decode_event(raw: bytes) -> LiveEvent:
    """The event encoded in ``raw``; ValueError when it is not a bus record."""
    kind, body = raw[:1], memoryview(raw)[1:]
    if kind == _FRAME:
        if len(body) < _HEAD.size:
            raise ValueError("truncated frame record")
        produced_at, n_data, n_low, n_cam = _HEAD.unpack_from(body)
        at = _HEAD.size
        if len(body) != at + n_cam + n_data + n_low:
            raise ValueError("frame record length does not match its header")
        cam = bytes(body[at : at + n_cam]).decode()
        at += n_cam
        data = bytes(body[at : at + n_data])
        low = bytes(body[at + n_data :]) if n_low else None
        return LiveFrame(cam, data, produced_at, low)
    if kind == _TEXT:
        text = bytes(body).decode()
        return LiveText(text, _message_type(text))
    if kind == _CLOSE:
        return LiveClose(bytes(body).decode())
    raise ValueError(f"unknown bus record kind {kind!r}")


def _message_type(text: str) -> str:
    """The ``type`` of a JSON message; our messages start with it, so most are not parsed whole."""
    marker = '{"type":"'
    if text.startswith(marker):
        end = text.find('"', len(marker))
        if end > 0:
            return text[len(marker) : end]
    try:
        message = json.loads(text)
    except ValueError:
        return ""
    kind = message.get("type") if isinstance(message, dict) else None
    return kind if isinstance(kind, str) else ""


def tracks_by_camera(message: dict[str, Any]) -> dict[str, Any]:
    """Per camera, its entry of a ``tracking_update`` (frame index, video time, tracks)."""
    cameras: dict[str, Any] = message.get("cameras") or {}
    return dict(cameras)


def identity_summary(message: dict[str, Any]) -> dict[str, Any]:
    """Global ids visible in a ``tracking_update``: the cameras that see each and its mean map position."""
    seen: dict[int, dict[str, Any]] = {}
    for cam, entry in (message.get("cameras") or {}).items():
        for t in entry.get("tracks", []):
            gid = t.get("global_id")
            if gid is None:
                continue
            s = seen.setdefault(int(gid), {"cameras": [], "points": []})
            s["cameras"].append(cam)
            if t.get("map_coords") is not None:
                s["points"].append(t["map_coords"])
    identities = []
    for gid in sorted(seen):
        pts = seen[gid]["points"]
        xy = [round(sum(p[i] for p in pts) / len(pts), 3) for i in (0, 1)] if pts else None
        identities.append({"global_id": gid, "cameras": sorted(seen[gid]["cameras"]), "map_xy": xy})
    return {
        "global_frame_index": message.get("global_frame_index"),
        "timestamp_video_s": message.get("timestamp_video_s"),
        "persons_now": len(identities),
        "identities": identities,
    }
