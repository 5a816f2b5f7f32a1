"""A camera whose video is a folder of sub-videos plays them in order as one stream: frame indices and
timestamps continue across boundaries, with no gap, in step with a camera recorded as one file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.core.config import Settings
from app.services.environments import CameraSpec
from app.services.video_data_manager import (
    FrameSource,
    GlobalFrame,
    SynchronizedReader,
    VideoDataManagerService,
    VideoSourceError,
)
from app.services.video_sources.segmented import SegmentedVideoSource
from tests.s3_server import level, write_sub_videos, write_video


def cam(cid: str, video: Path, fps: float = 10.0) -> CameraSpec:
    return CameraSpec(cid, cid, video, 160, 120, fps, np.eye(3))


def service(tmp: Path) -> VideoDataManagerService:
    return VideoDataManagerService(Settings(data_dir=tmp / "data", environments_dir=tmp / "none"))


def play(sources: list[FrameSource]) -> list[GlobalFrame]:
    reader = SynchronizedReader(sources, read_ahead=2)
    reader.start()
    frames = []
    try:
        while (gf := reader.get(timeout=30)) is not None:
            frames.append(gf)
    finally:
        reader.close()
    return frames


def grey(gf: GlobalFrame, cid: str) -> float:
    return float(gf.frames[cid].image.mean())


def test_sub_videos_play_back_to_back_as_one_stream(tmp_path: Path) -> None:
    write_sub_videos(tmp_path / "c1", segments=3, frames=10)
    (source,) = service(tmp_path).open([cam("c1", tmp_path / "c1")])
    assert isinstance(source, SegmentedVideoSource)
    assert source.frame_count == 30 and source.fps == 10.0
    frames = play([source])
    assert [g.index for g in frames] == list(range(30))
    assert [g.frames["c1"].frame_index for g in frames] == list(range(30))
    assert all(abs(g.frames["c1"].timestamp_s - i / 10.0) < 1e-9 for i, g in enumerate(frames))
    # the pixels are those of the right sub-video frame, in order, across both boundaries
    assert all(abs(grey(g, "c1") - level(i)) <= 3 for i, g in enumerate(frames))


def test_sub_videos_keep_in_step_with_a_camera_recorded_as_one_file(tmp_path: Path) -> None:
    write_sub_videos(tmp_path / "seg", segments=3, frames=10)
    write_video(tmp_path / "whole.mp4", 0, 30)
    sources = service(tmp_path).open([cam("seg", tmp_path / "seg"), cam("whole", tmp_path / "whole.mp4")])
    frames = play(sources)
    assert len(frames) == 30
    for i, g in enumerate(frames):
        assert g.frames["seg"].frame_index == g.frames["whole"].frame_index == i
        assert abs(grey(g, "seg") - grey(g, "whole")) <= 3


def test_order_is_natural_and_other_files_are_ignored(tmp_path: Path) -> None:
    folder = tmp_path / "c1"
    folder.mkdir()
    for k, name in enumerate(["sub_video_1.mp4", "sub_video_2.mp4", "sub_video_10.mp4"]):
        write_video(folder / name, k * 5, 5)
    (folder / "README.txt").write_text("not a video")
    (folder / ".hidden.mp4").write_bytes(b"not played")
    (source,) = service(tmp_path).open([cam("c1", folder)])
    frames = play([source])
    assert len(frames) == 15
    assert all(abs(grey(g, "c1") - level(i)) <= 3 for i, g in enumerate(frames))


def test_camera_fps_comes_from_the_first_sub_video_when_the_environment_has_none(tmp_path: Path) -> None:
    write_sub_videos(tmp_path / "c1", segments=2, frames=4, fps=5.0)
    (source,) = service(tmp_path).open([cam("c1", tmp_path / "c1", fps=0.0)])
    assert source.fps == 5.0
    frames = [source.read() for _ in range(8)]
    assert [f.timestamp_s for f in frames if f is not None] == [i / 5.0 for i in range(8)]
    assert source.read() is None
    source.close()


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    with pytest.raises(VideoSourceError, match=r"camera 'c1': no sub-videos"):
        service(tmp_path).open([cam("c1", tmp_path / "c1")])


def test_an_undecodable_sub_video_fails_the_stream_naming_it(tmp_path: Path) -> None:
    subs = write_sub_videos(tmp_path / "c1", segments=3, frames=5)
    subs[1].write_bytes(b"this is not a video")
    (source,) = service(tmp_path).open([cam("c1", tmp_path / "c1")])
    with pytest.raises(VideoSourceError, match=r"cannot decode sub-video .*sub_video_02\.mp4"):
        play([source])
