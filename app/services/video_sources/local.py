"""Sub-videos in a local folder (the default store): nothing to download, the files are used in place."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from app.services.environments import CameraSpec
from app.services.video_sources.base import (
    Lease,
    SubVideo,
    VideoStoreError,
    done_future,
    failed_future,
    is_sub_video_name,
    natural_key,
)


def list_local_sub_videos(location: Path, camera_id: str) -> list[SubVideo]:
    """A folder's sub-videos in natural order, or a single file as the camera's only sub-video.

    Only regular files that stay inside the folder count: a symlink pointing elsewhere is ignored, so
    nothing outside the camera's folder can ever be served as one of its sub-videos.
    """
    if location.is_file():
        return [SubVideo(location.name, str(location), str(location), location.stat().st_size)]
    if not location.is_dir():
        raise VideoStoreError(f"camera '{camera_id}': video folder not found: {location}")
    root = location.resolve()
    subs = []
    for p in location.iterdir():
        if not is_sub_video_name(p.name) or not p.is_file() or p.resolve().parent != root:
            continue
        subs.append(SubVideo(p.name, str(p), str(p), p.stat().st_size))
    if not subs:
        raise VideoStoreError(f"camera '{camera_id}': no sub-videos (sub_video_01.mp4, …) in {location}")
    return sorted(subs, key=lambda s: natural_key(s.name))


class LocalFolderStore:
    remote = False

    def list_sub_videos(self, camera: CameraSpec) -> Future[list[SubVideo]]:
        if not isinstance(camera.video, Path):
            return failed_future(VideoStoreError(f"camera '{camera.id}': not a local video: {camera.video}"))
        try:
            return done_future(list_local_sub_videos(camera.video, camera.id))
        except (VideoStoreError, OSError) as exc:
            return failed_future(exc)

    def fetch(self, sub: SubVideo) -> Future[Lease]:
        path = Path(sub.key)
        if not path.is_file():
            return failed_future(VideoStoreError(f"sub-video {sub.uri} is gone"))
        return done_future(Lease(path))

    def bytes_ready(self, sub: SubVideo) -> int:
        return sub.size

    def close(self) -> None:
        return None
