from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from app.services.environments import CameraSpec
from app.services.video_data_manager import SynchronizedReader, VideoDataManagerService, VideoSourceError


def write_video(path: Path, n: int, fps: float) -> None:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for i in range(n):
        img = np.full((48, 64, 3), (i * 10) % 255, np.uint8)
        w.write(img)
    w.release()


def cam(cid: str, video: Path, fps: float) -> CameraSpec:
    return CameraSpec(cid, cid, video, 64, 48, fps, np.eye(3))


def test_cameras_with_different_fps_are_aligned_by_timestamp(tmp_path: Path) -> None:
    write_video(tmp_path / "a.mp4", 20, 10.0)
    write_video(tmp_path / "b.mp4", 10, 5.0)
    sources = VideoDataManagerService().open([cam("a", tmp_path / "a.mp4", 10.0), cam("b", tmp_path / "b.mp4", 5.0)])
    reader = SynchronizedReader(sources, read_ahead=2)
    assert reader.fps == 10.0
    reader.start()
    frames = []
    while (gf := reader.get(timeout=10)) is not None:
        frames.append(gf)
    reader.close()
    assert [g.index for g in frames] == list(range(20))
    assert all("a" in g.frames for g in frames)
    with_b = [g.index for g in frames if "b" in g.frames]
    assert with_b == list(range(0, 20, 2))  # the 5 fps camera appears every other global frame
    for g in frames:
        for f in g.frames.values():
            assert abs(f.timestamp_s - g.timestamp_s) < 0.5 / 10.0


def test_missing_video_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VideoSourceError, match="not found"):
        VideoDataManagerService().open([cam("x", tmp_path / "nope.mp4", 7.0)])


def test_undecodable_video_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    with pytest.raises(VideoSourceError, match="cannot decode"):
        VideoDataManagerService().open([cam("x", tmp_path / "bad.mp4", 7.0)])
