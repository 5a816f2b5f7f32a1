"""Bad video on a real server: a file that is not a video, a truncated one, a sub-video that disappears while
the task plays. Each task ends FAILED with a message naming the camera and the file; a task running beside it
and the server are unaffected; history keeps what was processed before the failure. (An S3 object that is not
a video: tests/test_s3_source.py.)"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest

from app.core.config import Settings
from tests.conftest import shared
from tests.live_server import live_server

FRAMES = 42


def _frames(n: int, camera: str = "c1.mp4") -> list[Any]:
    cap = cv2.VideoCapture(str(shared("multiview-dev") / camera))
    out = []
    for _ in range(n):
        ok, img = cap.read()
        assert ok
        out.append(img)
    cap.release()
    return out


def _write(path: Path, frames: list[Any], fourcc: str = "MJPG") -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 7.0, (640, 480))
    for f in frames:
        out.write(f)
    out.release()
    return path


def _environment(env_id: str, videos: dict[str, str]) -> dict[str, Any]:
    raw = json.loads((shared("multiview-dev") / "environment.json").read_text())
    cams = [
        {k: v for k, v in c.items() if k in ("id", "width", "height", "fps", "image_to_map_homography")}
        | {"video": videos[c["id"]]}
        for c in raw["cameras"]
        if c["id"] in videos
    ]
    return {"id": env_id, "map": raw["map"] | {"image": None}, "cameras": cams}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("bad-videos")
    envs = tmp / "envs"
    envs.mkdir()
    frames = _frames(FRAMES)
    good = _write(tmp / "good.avi", frames)
    (tmp / "notes.mp4").write_text("these are meeting notes, not a video\n" * 50)
    whole = _write(tmp / "whole.avi", frames).read_bytes()
    (tmp / "truncated.avi").write_bytes(whole[: len(whole) // 2])
    folder = tmp / "subs"
    folder.mkdir()
    for k in range(3):
        _write(folder / f"sub_video_{k + 1:02d}.avi", frames[k * 14 : (k + 1) * 14])
    layouts = {
        "good": {"c1": str(good), "c2": str(good)},
        "not-a-video": {"c1": str(good), "c2": str(tmp / "notes.mp4")},
        "truncated": {"c1": str(tmp / "truncated.avi"), "c2": str(good)},
        "vanishing": {"c1": str(folder)},
    }
    for env_id, videos in layouts.items():
        (envs / f"{env_id}.json").write_text(json.dumps(_environment(env_id, videos)))
    settings = Settings(
        environments_dir=envs,
        playback_speed=1.0,
        data_dir=tmp / "data",
        history_flush_interval_s=0.2,
        video_prefetch=0,
    )
    with live_server(settings) as base:
        yield base, folder


def _start(base: str, env_id: str) -> str:
    r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": env_id})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def _ended(base: str, task: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st: dict[str, Any] = httpx.get(f"{base}/api/v1/processing-tasks/{task}/status").json()
        if st["status"] in ("COMPLETED", "FAILED", "STOPPED"):
            return st
        time.sleep(0.2)
    raise AssertionError(f"task {task} did not end")


def _recorded_run(base: str, task: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        items = httpx.get(base + "/api/v1/analytics_data/task_runs", params={"task_id": task}).json()["items"]
        if items and items[0]["status"] in ("FAILED", "COMPLETED"):
            return dict(items[0])
        time.sleep(0.3)
    raise AssertionError(f"task {task} not in history")


def test_a_file_that_is_not_a_video_fails_its_task_only(server: tuple[str, Path]) -> None:
    base, _ = server
    good = _start(base, "good")
    bad = _start(base, "not-a-video")
    st = _ended(base, bad)
    assert st["status"] == "FAILED"
    assert "camera 'c2'" in st["details"] and "notes.mp4" in st["details"], st["details"]
    assert _ended(base, good)["status"] == "COMPLETED"
    assert httpx.get(base + "/health").status_code == 200


def test_a_truncated_video_fails_after_what_it_had_and_history_keeps_that(server: tuple[str, Path]) -> None:
    base, _ = server
    task = _start(base, "truncated")
    st = _ended(base, task)
    assert st["status"] == "FAILED"
    assert "camera 'c1'" in st["details"] and "truncated.avi" in st["details"], st["details"]
    assert f"of {FRAMES} frames" in st["details"] and "truncated or corrupt" in st["details"]
    run = _recorded_run(base, task)
    assert run["status"] == "FAILED" and "truncated.avi" in run["details"]
    assert 10 <= run["frames_processed"] < FRAMES
    people = httpx.get(base + "/api/v1/analytics_data/dwell/cameras", params={"task_id": task}).json()["items"]
    assert {p["camera_id"] for p in people} == {"c1", "c2"}  # what was tracked before the failure is kept


def test_a_sub_video_that_disappears_while_playing_fails_with_its_name(server: tuple[str, Path]) -> None:
    base, folder = server
    task = _start(base, "vanishing")
    deadline = time.monotonic() + 60
    while httpx.get(f"{base}/api/v1/processing-tasks/{task}/status").json()["status"] != "PROCESSING":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (folder / "sub_video_03.avi").unlink()
    st = _ended(base, task)
    assert st["status"] == "FAILED"
    assert "camera 'c1'" in st["details"] and "sub_video_03.avi" in st["details"], st["details"]
    run = _recorded_run(base, task)
    assert run["frames_processed"] >= 20  # the first two sub-videos (28 frames) played before the failure
    assert httpx.get(base + "/health").status_code == 200
