"""End to end: a real server, real models, a 4-camera clip of real video, a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import websockets

from app.core.config import Settings
from app.utils.wire import unpack_frame
from tests.conftest import shared
from tests.live_server import live_server

pytestmark = pytest.mark.e2e
N_FRAMES = 28  # 4 s of the 7 fps derived cameras


def make_clip(dst: Path, n: int) -> Path:
    """The first ``n`` frames of the 4-camera multiview-dev set (derived from PETS2009 S2.L1)."""
    src = shared("multiview-dev")
    env = json.loads((src / "environment.json").read_text())
    for cam in env["cameras"]:
        cap = cv2.VideoCapture(str(src / cam["video"]))
        out = cv2.VideoWriter(
            str(dst / cam["video"]), cv2.VideoWriter_fourcc(*"mp4v"), cam["fps"], (cam["width"], cam["height"])
        )
        for _ in range(n):
            ok, img = cap.read()
            assert ok
            out.write(img)
        out.release()
        cap.release()
        cam["num_frames"] = n
    env["id"] = "clip"
    env["num_frames"] = n
    env["map"]["image"] = None
    (dst / "environment.json").write_text(json.dumps(env))
    return dst


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box against N boxes (xyxy)."""
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return np.asarray(inter / (area(a) + area(b) - inter + 1e-9))


async def collect(ws_url: str) -> tuple[list[tuple[Any, bytes]], list[dict[str, Any]], int | None]:
    frames: list[tuple[Any, bytes]] = []
    messages: list[dict[str, Any]] = []
    async with websockets.connect(ws_url, compression=None, max_size=2**24) as ws:
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    frames.append(unpack_frame(msg))
                else:
                    messages.append(json.loads(msg))
        except websockets.ConnectionClosed:
            pass
        return frames, messages, ws.close_code


def test_four_camera_task_streams_frames_and_tracks_that_match_ground_truth(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, N_FRAMES)
    settings = Settings(environments_dir=tmp_path / "none", extra_environments=[clip], playback_speed=0.0)
    with live_server(settings) as base:
        health = httpx.get(base + "/health").json()
        assert health["components"]["detector"]["state"] == "ready"
        r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "clip"})
        assert r.status_code == 202
        started = r.json()
        frames, messages, close_code = asyncio.run(collect(started["websocket_url"]))
        status = httpx.get(started["status_url"]).json()

    assert status["status"] == "COMPLETED", status
    assert status["frames_processed"] == N_FRAMES and status["frames_skipped"] == 0
    assert close_code == 1000

    # binary JPEG frames for all four cameras, decodable, the camera's size
    cams = {h.camera_id for h, _ in frames}
    assert cams == {"c1", "c2", "c3", "c4"}
    for _h, jpeg in frames[:: max(1, len(frames) // 12)]:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (480, 640, 3)

    updates = [m for m in messages if m["type"] == "tracking_update"]
    syncs = [m for m in messages if m["type"] == "frame_sync"]
    assert updates and syncs and any(m["type"] == "status_update" for m in messages)
    assert messages[-1]["type"] == "status_update" and messages[-1]["status"] == "COMPLETED"

    # tracked boxes overlap the ground-truth people; map coordinates land near their true positions
    root = shared("multiview-dev")
    world = {(int(r[0]), int(r[1])): r[2:4] for r in np.loadtxt(root / "gt" / "gt_world.txt", delimiter=",")}
    matched = tracked = gt_total = gt_found = 0
    map_err: list[float] = []
    gid_by_person: dict[int, set[int]] = {}
    for cid in cams:
        gt = np.loadtxt(root / "gt" / f"gt_{cid}.txt", delimiter=",")
        for u in updates[3::3]:  # sampled frames, after the tracker's first frames
            cam = u["cameras"].get(cid)
            if cam is None:
                continue
            rows = gt[gt[:, 0] == cam["frame_index"] + 1]
            gt_boxes = np.stack([rows[:, 2], rows[:, 3], rows[:, 2] + rows[:, 4], rows[:, 3] + rows[:, 5]], 1)
            gt_total += len(rows)
            hit = np.zeros(len(rows), bool)
            for t in cam["tracks"]:
                assert isinstance(t["global_id"], int) and len(t["bbox_xyxy"]) == 4
                tracked += 1
                if len(rows) == 0:
                    continue
                ious = iou(np.array(t["bbox_xyxy"]), gt_boxes)
                j = int(np.argmax(ious))
                if ious[j] >= 0.5:
                    matched += 1
                    hit[j] = True
                    pid = int(rows[j, 1])
                    gid_by_person.setdefault(pid, set()).add(t["global_id"])
                    assert t["map_coords"] is not None
                    map_err.append(float(np.linalg.norm(np.array(t["map_coords"]) - world[(int(rows[j, 0]), pid)])))
            gt_found += int(hit.sum())
    precision, recall = matched / max(tracked, 1), gt_found / max(gt_total, 1)
    assert precision >= 0.7, precision
    assert recall >= 0.5, recall
    assert np.median(map_err) < 0.5, np.median(map_err)
    # the same person mostly carries one global id across the four cameras
    assert np.mean([len(g) for g in gid_by_person.values()]) <= 2.0
