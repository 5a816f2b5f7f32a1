"""``GET /api/v1/media/tasks/{task}/environments/{env}/cameras/{camera}/sub_videos/{name}``: serves a
camera's known sub-videos with range requests; anything else — traversal, absolute or encoded paths,
symlinks out of the cache or the camera's folder — is 404 and touches nothing (no listing, no download,
no file)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.testclient import TestClient

from app.api.v1.endpoints.media import LeasedFileResponse
from app.core.config import Settings
from app.services.environments import CameraSpec, S3Location
from app.services.video_sources.base import Lease
from app.services.video_sources.library import VideoLibrary
from tests.live_server import live_server
from tests.s3_server import FaultProxy, s3_settings, s3_with_faults, upload, write_sub_videos

BUCKET = "media"
SECRET = b"top secret, outside every store"
FINISHED = ("COMPLETED", "FAILED", "STOPPED")


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[FaultProxy, Any]]:
    with s3_with_faults() as pair:
        yield pair


@pytest.fixture(scope="module")
def world(s3: tuple[FaultProxy, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server with one finished task on an environment with an S3 camera (c1) and a local one (c2)."""
    proxy, direct = s3
    tmp = tmp_path_factory.mktemp("media")
    (tmp / "secret.mp4").write_bytes(SECRET)
    remote = write_sub_videos(tmp / "src" / "c1", segments=3, frames=5)
    upload(direct, BUCKET, "cams/c1/", remote)
    local = write_sub_videos(tmp / "c2", segments=2, frames=5)
    os.symlink(tmp / "secret.mp4", tmp / "c2" / "sub_video_03.mp4")  # a symlink out of the camera's folder
    cam = {"fps": 10, "width": 160, "height": 120, "image_to_map_homography": np.eye(3).tolist()}
    env = {
        "id": "media-env",
        "map": {"width_px": 160, "height_px": 120, "pixels_per_meter": 10},
        "cameras": [{"id": "c1", "video": f"s3://{BUCKET}/cams/c1/", **cam}, {"id": "c2", "video": "c2", **cam}],
    }
    other = {**env, "id": "other-env"}
    envs = tmp / "envs"
    envs.mkdir()
    (tmp / "media-env.json").write_text(json.dumps(env))
    (envs / "other.json").write_text(
        json.dumps({**other, "cameras": [{**env["cameras"][1], "video": str(tmp / "c2")}]})
    )
    settings = Settings(
        **s3_settings(
            proxy, tmp, environments_dir=envs, extra_environments=[tmp / "media-env.json"], playback_speed=0.0
        )
    )
    with live_server(settings) as base:
        r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "media-env"})
        task_id = r.json()["task_id"]
        end = time.monotonic() + 60  # the endpoint serves a task's sub-videos whatever became of the task
        while httpx.get(f"{base}/api/v1/processing-tasks/{task_id}/status").json()["status"] not in FINISHED:
            assert time.monotonic() < end, "task did not finish"
            time.sleep(0.1)
        for f in remote:  # every S3 sub-video cached (fetched on demand when the task did not get to it)
            assert httpx.get(base + url({"task": task_id}, f.name)).status_code == 200
        yield {
            "base": base,
            "task": task_id,
            "proxy": proxy,
            "cache": tmp / "video-cache",
            "remote": remote,
            "local": local,
            "tmp": tmp,
        }


def url(w: dict[str, Any], name: str, camera: str = "c1", env: str = "media-env", task: str | None = None) -> str:
    return f"/api/v1/media/tasks/{task or w['task']}/environments/{env}/cameras/{camera}/sub_videos/{name}"


def raw_get(base: str, target: str) -> tuple[int, bytes]:
    """A request whose target goes out exactly as written (no client-side normalisation of ``..``)."""
    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=30)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def snapshot(w: dict[str, Any]) -> tuple[int, list[tuple[str, int]]]:
    cache: Path = w["cache"]
    return len(w["proxy"].requests), sorted((p.name, p.stat().st_size) for p in cache.iterdir())


@pytest.mark.parametrize("camera", ["c1", "c2"])
def test_a_known_sub_video_is_served_whole_and_in_ranges(world: dict[str, Any], camera: str) -> None:
    src = (world["remote"] if camera == "c1" else world["local"])[1]
    data = src.read_bytes()
    target = world["base"] + url(world, "sub_video_02.mp4", camera)
    r = httpx.get(target)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "video/mp4" and r.headers["accept-ranges"] == "bytes"
    r = httpx.get(target, headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == data[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(data)}"
    r = httpx.get(target, headers={"Range": "bytes=-50"})
    assert r.status_code == 206 and r.content == data[-50:]
    r = httpx.get(target, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416
    r = httpx.head(target)
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(data) and r.content == b""


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../../../../etc/passwd",
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "%2e%2e%2f%2e%2e%2fsecret.mp4",
        "%2Fetc%2Fpasswd",
        "..%5C..%5Csecret.mp4",
        ".%2Fsub_video_01.mp4",
        "sub_video_01.mp4%00.txt",
        "sub_video_01.mp4%2F",
        "SUB_VIDEO_01.MP4",
        "sub_video_09.mp4",
        ".hidden.mp4",
        "secret.mp4",
    ],
)
def test_names_that_are_not_known_sub_videos_are_404_and_touch_nothing(world: dict[str, Any], name: str) -> None:
    before = snapshot(world)
    for camera in ("c1", "c2"):
        status, body = raw_get(world["base"], url(world, name, camera))
        assert status == 404, (camera, name, status)
        assert SECRET not in body and b"root:" not in body
    assert snapshot(world) == before, "no listing, no download, no file"


def test_unknown_task_environment_or_camera_is_404(world: dict[str, Any]) -> None:
    before = snapshot(world)
    for target in (
        url(world, "sub_video_01.mp4", task="nope"),
        url(world, "sub_video_01.mp4", env="other-env"),  # a real environment, but not the task's
        url(world, "sub_video_01.mp4", camera="c9"),
    ):
        assert raw_get(world["base"], target)[0] == 404, target
    assert snapshot(world) == before


def test_a_symlink_out_of_the_camera_folder_is_not_a_sub_video(world: dict[str, Any]) -> None:
    status, body = raw_get(world["base"], url(world, "sub_video_03.mp4", "c2"))
    assert status == 404 and SECRET not in body


def test_a_cached_file_replaced_by_a_symlink_out_of_the_cache_is_404(world: dict[str, Any]) -> None:
    data = world["remote"][2].read_bytes()
    (cached,) = [p for p in Path(world["cache"]).iterdir() if p.read_bytes() == data]
    cached.unlink()
    os.symlink(world["tmp"] / "secret.mp4", cached)
    status, body = raw_get(world["base"], url(world, "sub_video_03.mp4", "c1"))
    assert status == 404 and SECRET not in body


# -- the pieces behind the endpoint --------------------------------------------------------------
def test_a_file_response_holds_its_lease_until_sent(tmp_path: Path) -> None:
    f = tmp_path / "sub_video_01.mp4"
    f.write_bytes(bytes(range(256)) * 10)
    released: list[str] = []

    async def serve(request: Request) -> LeasedFileResponse:
        return LeasedFileResponse(Lease(f, lambda: released.append(request.method)), f.name)

    with TestClient(Starlette(routes=[Route("/v", serve, methods=["GET", "HEAD"])])) as client:
        assert client.get("/v").content == f.read_bytes()
        assert client.get("/v", headers={"Range": "bytes=5-9"}).content == f.read_bytes()[5:10]
        assert client.head("/v").status_code == 200
    assert released == ["GET", "GET", "HEAD"]


def test_library_fetches_a_known_sub_video_once_on_demand_and_nothing_else(
    s3: tuple[FaultProxy, Any], tmp_path: Path
) -> None:
    proxy, direct = s3
    upload(direct, BUCKET, "lazy/c1/", write_sub_videos(tmp_path / "src", segments=2, frames=3))
    lib = VideoLibrary(Settings(**s3_settings(proxy, tmp_path)))
    cam = CameraSpec("c1", "c1", S3Location(BUCKET, "lazy/c1/"), 160, 120, 10.0, np.eye(3))
    try:
        n = len(proxy.requests)
        assert asyncio.run(lib.acquire(cam, "../lazy/c1/sub_video_01.mp4")) is None
        assert len(proxy.requests) == n, "a name that is not a sub-video name asks the store nothing"
        lease = asyncio.run(lib.acquire(cam, "sub_video_02.mp4"))
        assert lease is not None and lease.path.read_bytes() == (tmp_path / "src" / "sub_video_02.mp4").read_bytes()
        assert lib.cache is not None and lib.cache.pins(lease.path.name) == 1
        lease.release()
        assert asyncio.run(lib.acquire(cam, "sub_video_07.mp4")) is None
        assert len(proxy.gets("lazy/c1/")) == 1 and len(proxy.seen("list-type")) >= 1
        assert len([r for r in proxy.requests[n:] if "list-type" in r.target]) == 1, "the listing is kept"
    finally:
        lib.close()
