"""Reference client of the tracking WebSocket (used by ``spoton watch`` and ``spoton demo``).

It shows what a browser client does: tell binary frames from JSON by the WebSocket message type, read the
frame header to know camera and frame index, and keep the latest tracking state per camera.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websockets

from app.utils.wire import unpack_frame


@dataclass
class WatchSummary:
    frames_received: dict[str, int] = field(default_factory=dict)
    bytes_received: int = 0
    tracking_updates: int = 0
    last_global_frame: int = -1
    persons_now: int = 0
    global_ids: set[int] = field(default_factory=set)
    last_status: dict[str, Any] = field(default_factory=dict)
    close_code: int | None = None
    close_reason: str = ""

    def line(self) -> str:
        st = self.last_status
        fps = st.get("fps", {}).get("per_camera", {}) if st else {}
        fps_txt = " ".join(f"{c}:{v:.1f}" for c, v in sorted(fps.items())) or "-"
        lat = (st.get("latency_ms") or {}).get("p50") if st else None
        return (
            f"[{st.get('status', 'waiting for status')}] frames processed {st.get('frames_processed', 0)}"
            f" (skipped {st.get('frames_skipped', 0)}) | fps/camera {fps_txt}"
            f" | persons now {self.persons_now} | global ids so far {len(self.global_ids)}"
            f" | latency p50 {lat if lat is not None else '-'} ms"
            f" | received {sum(self.frames_received.values())} JPEGs"
        )


async def watch(
    ws_url: str,
    *,
    save_dir: Path | None = None,
    on_tick: Callable[[WatchSummary], None] | None = None,
    tick_s: float = 1.0,
    max_seconds: float | None = None,
) -> WatchSummary:
    """Receive until the server closes (task ended) or ``max_seconds`` pass."""
    summary = WatchSummary()
    start = time.monotonic()
    next_tick = start + tick_s
    async with websockets.connect(ws_url, compression=None, max_size=2**26) as ws:
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    header, jpeg = unpack_frame(msg)
                    cam = header.camera_id
                    summary.frames_received[cam] = summary.frames_received.get(cam, 0) + 1
                    summary.bytes_received += len(msg)
                    if save_dir is not None:
                        d = save_dir / cam
                        d.mkdir(parents=True, exist_ok=True)
                        (d / f"{header.frame_index:06d}.jpg").write_bytes(jpeg)
                else:
                    data = json.loads(msg)
                    kind = data.get("type")
                    if kind == "tracking_update":
                        summary.tracking_updates += 1
                        summary.last_global_frame = data["global_frame_index"]
                        gids = {t["global_id"] for c in data["cameras"].values() for t in c["tracks"]}
                        summary.persons_now = len(gids)
                        summary.global_ids |= gids
                    elif kind == "status_update":
                        summary.last_status = data
                now = time.monotonic()
                if on_tick is not None and now >= next_tick:
                    on_tick(summary)
                    next_tick = now + tick_s
                if max_seconds is not None and now - start > max_seconds:
                    break
        except websockets.ConnectionClosed:
            pass
    summary.close_code = ws.close_code
    summary.close_reason = ws.close_reason or ""
    if on_tick is not None:
        on_tick(summary)
    return summary
