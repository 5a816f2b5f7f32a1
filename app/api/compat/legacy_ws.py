"""The original frontend's WebSocket dialect: per-camera JSON ``tracking_update`` in ``detection_streaming`` mode.

Chosen on ``/ws/tracking/{task_id}`` when the query has ``tab_id`` (native clients never send one). No binary
messages (the frontend shows frames through MJPEG); each native ``tracking_update`` becomes one message per
camera with the frontend's camera id, boxes in 1920×1080 of the 16:9 letterboxed frame, a ``global_frame_index``
counted per task without gaps (skipped frames leave none), detections and map coordinates with a short trail.
``/ws/focus/{task_id}`` answers the frontend's focus messages so its console stays quiet.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from app.api.compat.aliases import AliasTable, EnvironmentAlias, Letterbox
from app.api.deps import AppContext, get_context
from app.services.notifications import Outbound
from app.services.task_manager import UnknownTaskError
from app.stores.live_state import LiveStateUnavailableError

log = logging.getLogger(__name__)
router = APIRouter()
TRAIL_POINTS = 10


class LegacyTranslator:
    """Native hub messages → the frontend's messages, for one client of one task."""

    def __init__(self, task_id: str, alias: EnvironmentAlias | None, letterboxes: dict[str, Letterbox]) -> None:
        self.task_id = task_id
        self.alias = alias
        self.letterboxes = letterboxes
        self.frame = 0
        self.trails: dict[int, deque[dict[str, Any]]] = {}

    def __call__(self, msg: Outbound) -> list[Outbound]:
        if msg.kind != "text" or not isinstance(msg.data, str) or '"tracking_update"' not in msg.data:
            return []  # frames go through MJPEG; other JSON means nothing to the frontend
        try:
            update = json.loads(msg.data)
        except ValueError:
            return []
        return [Outbound("text", json.dumps(m, separators=(",", ":"))) for m in self.translate(update)]

    def translate(self, update: dict[str, Any]) -> list[dict[str, Any]]:
        self.frame += 1
        ts = update.get("timestamp_processed_utc")
        seen: set[int] = set()
        out = []
        for ours, cam in (update.get("cameras") or {}).items():
            theirs = (self.alias.theirs(ours) if self.alias is not None else None) or ours
            box = self.letterboxes.get(ours)
            tracks, detections, mapping = [], [], []
            for t in cam.get("tracks", []):
                xyxy = box.box(t["bbox_xyxy"]) if box is not None else list(t["bbox_xyxy"])
                gid, det_id = int(t["global_id"]), f"{theirs}_{t['track_id']}"
                xy = t.get("map_coords")
                tracks.append(
                    {
                        "track_id": t["track_id"],
                        "global_id": gid,
                        "bbox_xyxy": xyxy,
                        "confidence": t["confidence"],
                        "map_coords": xy,
                    }
                )
                x1, y1, x2, y2 = xyxy
                detections.append(
                    {
                        "detection_id": det_id,
                        "class_name": "person",
                        "class_id": 0,
                        "confidence": t["confidence"],
                        "bbox": {
                            "x1": x1,
                            "y1": y1,
                            "x2": x2,
                            "y2": y2,
                            "width": round(x2 - x1, 1),
                            "height": round(y2 - y1, 1),
                            "center_x": round((x1 + x2) / 2, 1),
                            "center_y": round((y1 + y2) / 2, 1),
                        },
                        "track_id": t["track_id"],
                        "global_id": gid,
                        "map_coords": {"map_x": xy[0], "map_y": xy[1]} if xy else None,
                    }
                )
                if xy:
                    if gid not in seen:
                        seen.add(gid)
                        trail = self.trails.setdefault(gid, deque(maxlen=TRAIL_POINTS))
                        trail.append({"x": xy[0], "y": xy[1], "frame": self.frame, "timestamp": ts})
                    mapping.append(
                        {
                            "detection_id": det_id,
                            "map_x": xy[0],
                            "map_y": xy[1],
                            "projection_successful": True,
                            "coordinate_system": "map_metres",
                            "trail": [
                                {
                                    "x": p["x"],
                                    "y": p["y"],
                                    "frame_offset": p["frame"] - self.frame,
                                    "timestamp": p["timestamp"],
                                }
                                for p in self.trails[gid]
                            ],
                        }
                    )
            out.append(
                {
                    "type": "tracking_update",
                    "mode": "detection_streaming",
                    "task_id": self.task_id,
                    "camera_id": theirs,
                    "global_frame_index": self.frame,
                    "timestamp_processed_utc": ts,
                    "camera_data": {"tracks": tracks},
                    "detection_data": {"detections": detections, "detection_count": len(detections)},
                    "future_pipeline_data": {"mapping_coordinates": mapping},
                }
            )
        for gid in [g for g, tr in self.trails.items() if self.frame - tr[-1]["frame"] > 50]:
            del self.trails[gid]  # people not seen for a while: bounded memory
        return out


def letterboxes_for(ctx: AppContext, environment_id: str) -> dict[str, Letterbox]:
    env = ctx.catalog.get(environment_id)
    if env is None:
        return {}
    return {cid: Letterbox(c.width, c.height) for cid, c in env.cameras.items() if c.width and c.height}


async def legacy_translator(websocket: WebSocket, ctx: AppContext, task_id: str) -> LegacyTranslator:
    aliases: AliasTable = websocket.app.state.frontend_aliases
    try:
        task = await ctx.tasks.find(task_id)
    except (UnknownTaskError, LiveStateUnavailableError):
        return LegacyTranslator(task_id, None, {})  # the stream lookup closes it with the right code
    return LegacyTranslator(
        task_id, aliases.for_environment(task.environment_id), letterboxes_for(ctx, task.environment_id)
    )


@router.websocket("/ws/focus/{task_id}")
async def focus_ws(websocket: WebSocket, task_id: str) -> None:
    """Acknowledges the frontend's focus requests (focus filtering itself is done by the frontend here)."""
    get_context(websocket)
    await websocket.accept()
    focused: Any = None
    try:
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            try:
                msg = json.loads(frame.get("text") or "")  # binary or empty: ignored like any unknown message
            except ValueError:
                continue
            if not isinstance(msg, dict):
                continue
            kind = msg.get("type")
            if kind == "set_focus":
                focused = msg.get("global_person_id", msg.get("person_id"))
            elif kind == "clear_focus":
                focused = None
            elif kind == "ping":
                await websocket.send_text(json.dumps({"type": "pong", "task_id": task_id}))
                continue
            else:
                continue
            await websocket.send_text(
                json.dumps({"type": "focus_update", "task_id": task_id, "focused_person_id": focused})
            )
    except WebSocketDisconnect:
        return
