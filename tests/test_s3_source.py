"""Cameras whose videos live in S3, against a real S3 protocol server (moto) behind a fault-injecting proxy:
the environment format, playback of sub-videos from S3 with prefetch, download progress, clear failures,
and whole tasks through a real server, real models and a real WebSocket client."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import websockets

from app.core.config import Settings
from app.services.environments import CameraSpec, EnvironmentError_, S3Location, load_environment
from app.services.video_data_manager import (
    FrameSource,
    GlobalFrame,
    SynchronizedReader,
    VideoDataManagerService,
    VideoSourceError,
)
from app.services.video_sources.base import DownloadProgress
from app.services.video_sources.segmented import SegmentedVideoSource
from app.utils.wire import unpack_frame
from tests.conftest import SHARED_DATA
from tests.live_server import live_server
from tests.s3_server import FaultProxy, level, s3_settings, s3_with_faults, upload, write_sub_videos

BUCKET = "spoton"
WAIT = 60.0


# -- the environment format ----------------------------------------------------------------------
def _env_file(tmp: Path, video: Any) -> Path:
    raw = {
        "id": "e",
        "map": {"width_px": 100, "height_px": 100, "pixels_per_meter": 10},
        "cameras": [{"id": "c1", "video": video, "image_to_map_homography": np.eye(3).tolist()}],
    }
    (tmp / "env.json").write_text(json.dumps(raw))
    return tmp / "env.json"


@pytest.mark.parametrize(
    ("video", "expected"),
    [
        ("s3://videos/campus/c01/", S3Location("videos", "campus/c01/")),
        ("s3://videos/campus/c01", S3Location("videos", "campus/c01/")),
        ("s3://videos", S3Location("videos", "")),
        ({"s3_prefix": "/campus/c01"}, S3Location(None, "campus/c01/")),
        ({"s3_prefix": "campus/c01/", "bucket": "other"}, S3Location("other", "campus/c01/")),
    ],
)
def test_a_camera_can_name_an_s3_prefix(tmp_path: Path, video: Any, expected: S3Location) -> None:
    assert load_environment(_env_file(tmp_path, video)).cameras["c1"].video == expected


def test_a_local_folder_or_file_stays_a_path(tmp_path: Path) -> None:
    assert load_environment(_env_file(tmp_path, "c1/")).cameras["c1"].video == tmp_path / "c1"


@pytest.mark.parametrize(
    ("video", "message"),
    [
        ("s3:///prefix/", "bad S3 bucket name"),
        ({"bucket": "b"}, "needs 's3_prefix'"),
        ({"s3_prefix": 5}, "s3_prefix must be a string"),
        (7, "video must be a path"),
    ],
)
def test_a_bad_video_location_is_a_clear_error(tmp_path: Path, video: Any, message: str) -> None:
    with pytest.raises(EnvironmentError_, match=rf"camera 'c1'.*{message}"):
        load_environment(_env_file(tmp_path, video))


# -- playback from S3 ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[FaultProxy, Any]]:
    with s3_with_faults() as pair:
        yield pair


@pytest.fixture
def proxy(s3: tuple[FaultProxy, Any]) -> Iterator[FaultProxy]:
    s3[0].clear_faults()
    yield s3[0]
    s3[0].clear_faults()


def publish(s3: tuple[FaultProxy, Any], tmp: Path, prefix: str, cams: list[str], **kw: Any) -> None:
    for c in cams:
        upload(s3[1], BUCKET, f"{prefix}{c}/", write_sub_videos(tmp / "src" / prefix / c, **kw))


def s3_cam(cid: str, prefix: str) -> CameraSpec:
    return CameraSpec(cid, cid, S3Location(BUCKET, f"{prefix}{cid}/"), 160, 120, 10.0, np.eye(3))


def service(proxy: FaultProxy, tmp: Path, **kw: Any) -> VideoDataManagerService:
    return VideoDataManagerService(Settings(**s3_settings(proxy, tmp, **kw)))


def play(sources: list[FrameSource]) -> list[GlobalFrame]:
    reader = SynchronizedReader(sources, read_ahead=2)
    reader.start()
    frames = []
    try:
        while (gf := reader.get(timeout=WAIT)) is not None:
            frames.append(gf)
    finally:
        reader.close()
    return frames


def eventually(cond: Any, timeout: float = 20.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return bool(cond())


def test_s3_cameras_play_their_sub_videos_in_order_and_prefetch_the_next(
    s3: tuple[FaultProxy, Any], proxy: FaultProxy, tmp_path: Path
) -> None:
    publish(s3, tmp_path, "play/", ["c1", "c2"], segments=3, frames=10)
    videos = service(proxy, tmp_path)
    try:
        sources = videos.open([s3_cam("c1", "play/"), s3_cam("c2", "play/")])
        assert all(isinstance(s, SegmentedVideoSource) for s in sources)
        assert all(s.frame_count > 0 for s in sources)  # estimated from sizes, for progress
        cache = videos.library.cache
        assert cache is not None
        # while sub-video 1 plays (nothing read yet), sub-video 2 arrives; 3 waits for its turn
        for c in ("c1", "c2"):
            assert eventually(lambda c=c: len(proxy.gets(f"play/{c}/sub_video_02.mp4")) == 1)
            assert proxy.gets(f"play/{c}/sub_video_03.mp4") == []
        assert eventually(lambda: len(cache.names()) == 4)
        frames = play(sources)
    finally:
        videos.close()
    assert [g.index for g in frames] == list(range(30))
    for c in ("c1", "c2"):
        assert [g.frames[c].frame_index for g in frames] == list(range(30))
        assert all(abs(float(g.frames[c].image.mean()) - level(i)) <= 3 for i, g in enumerate(frames))
        for k in (1, 2, 3):
            assert len(proxy.gets(f"play/{c}/sub_video_0{k}.mp4")) == 1
    assert all(cache.pins(n) == 0 for n in cache.names()), "every lease is released at the end"


def test_progress_is_reported_while_the_first_sub_videos_arrive(
    s3: tuple[FaultProxy, Any], proxy: FaultProxy, tmp_path: Path
) -> None:
    publish(s3, tmp_path, "prog/", ["c1", "c2"], segments=2, frames=10)
    for c in ("c1", "c2"):
        proxy.inject("slow", f"prog/{c}/sub_video_01.mp4", seconds=1.5)
    seen: list[DownloadProgress] = []
    videos = service(proxy, tmp_path)
    try:
        sources = asyncio.run(videos.open_async([s3_cam("c1", "prog/"), s3_cam("c2", "prog/")], seen.append))
        for s in sources:
            s.close()
        assert len(seen) >= 3
        fractions = [p.fraction for p in seen]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert any(0.0 < f < 1.0 for f in fractions)
        assert seen[-1].files_done == seen[-1].files_total == 2
        # cached now: opening again downloads nothing and reports nothing
        again: list[DownloadProgress] = []
        for s in asyncio.run(videos.open_async([s3_cam("c1", "prog/")], again.append)):
            s.close()
        assert again == [] and len(proxy.gets("prog/c1/sub_video_01.mp4")) == 1
    finally:
        videos.close()


def test_a_sub_video_that_cannot_be_downloaded_fails_the_stream_clearly(
    s3: tuple[FaultProxy, Any], proxy: FaultProxy, tmp_path: Path
) -> None:
    publish(s3, tmp_path, "broken/", ["c1"], segments=3, frames=5)
    proxy.inject("500", "broken/c1/sub_video_02.mp4", times=-1)
    videos = service(proxy, tmp_path, s3_download_timeout_s=4.0)
    try:
        sources = videos.open([s3_cam("c1", "broken/")])
        with pytest.raises(
            VideoSourceError, match=r"camera 'c1'.*sub_video_02\.mp4.*failed after \d+ attempt.*HTTP 500"
        ):
            play(sources)
    finally:
        videos.close()


def test_close_interrupts_a_wait_at_a_sub_video_boundary(
    s3: tuple[FaultProxy, Any], proxy: FaultProxy, tmp_path: Path
) -> None:
    publish(s3, tmp_path, "wait/", ["c1"], segments=2, frames=3)
    proxy.inject("stall", "wait/c1/sub_video_02.mp4", times=-1, seconds=5.0)
    videos = service(proxy, tmp_path, s3_download_timeout_s=30.0, s3_stall_timeout_s=10.0)
    try:
        (source,) = videos.open([s3_cam("c1", "wait/")])
        assert [source.read() is not None for _ in range(3)] == [True] * 3
        result: list[object] = []
        reader = threading.Thread(target=lambda: result.append(source.read()))
        reader.start()
        assert eventually(lambda: len(proxy.gets("wait/c1/sub_video_02.mp4")) >= 1)
        source.close()
        reader.join(WAIT)
        assert result == [None]
    finally:
        videos.close()


# -- whole tasks through the server -------------------------------------------------------------
REAL_FRAMES, REAL_SEGMENTS = 12, 3
TASK_SEGMENT_FRAMES = 3
TASK_FRAMES = 3 * TASK_SEGMENT_FRAMES


def _env(env_id: str, cams: list[dict[str, Any]], size: tuple[int, int] = (160, 120)) -> dict[str, Any]:
    return {"id": env_id, "map": {"width_px": size[0], "height_px": size[1], "pixels_per_meter": 10}, "cameras": cams}


def _synth_cam(cid: str, video: str) -> dict[str, Any]:
    return {"id": cid, "video": video, "fps": 10, "width": 160, "height": 120,
            "image_to_map_homography": np.eye(3).tolist()}  # fmt: skip


def _split_real(tmp: Path) -> list[dict[str, Any]]:
    """The first frames of two cameras of the shared multiview set, cut into sub-videos."""
    src = SHARED_DATA / "multiview-dev"
    env = json.loads((src / "environment.json").read_text())
    cams = []
    per = REAL_FRAMES // REAL_SEGMENTS
    for cam in env["cameras"][:2]:
        cap = cv2.VideoCapture(str(src / cam["video"]))
        folder = tmp / "real" / cam["id"]
        folder.mkdir(parents=True)
        for k in range(REAL_SEGMENTS):
            out = cv2.VideoWriter(
                str(folder / f"sub_video_{k + 1:02d}.mp4"),
                cv2.VideoWriter_fourcc(*"mp4v"),
                cam["fps"],
                (cam["width"], cam["height"]),
            )
            for _ in range(per):
                ok, img = cap.read()
                assert ok
                out.write(img)
            out.release()
        cap.release()
        cams.append({k: v for k, v in cam.items() if k not in ("num_frames", "gt_file", "codec_fourcc")})
    return cams


@pytest.fixture(scope="module")
def server(s3: tuple[FaultProxy, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FaultProxy]]:
    proxy, direct = s3
    tmp = tmp_path_factory.mktemp("s3-server")
    envs = tmp / "envs"
    envs.mkdir()
    for name in ("synth", "conc", "fail", "slow", "stopme"):
        publish(s3, tmp, f"{name}/", ["c1", "c2"], segments=3, frames=TASK_SEGMENT_FRAMES)
        envs.joinpath(f"{name}.json").write_text(
            json.dumps(_env(f"s3-{name}", [_synth_cam(c, f"s3://{BUCKET}/{name}/{c}/") for c in ("c1", "c2")]))
        )
    for name, bad in (("notvideo-first", 1), ("notvideo-later", 2)):
        publish(s3, tmp, f"{name}/", ["c1", "c2"], segments=3, frames=TASK_SEGMENT_FRAMES)
        junk = tmp / "junk" / name / f"sub_video_{bad:02d}.mp4"
        junk.parent.mkdir(parents=True)
        junk.write_bytes(b"<html>an error page saved under a video's name</html>\n" * 40)
        upload(direct, BUCKET, f"{name}/c2/", [junk])  # replaces c2's sub-video with something that is not a video
        envs.joinpath(f"{name}.json").write_text(
            json.dumps(_env(f"s3-{name}", [_synth_cam(c, f"s3://{BUCKET}/{name}/{c}/") for c in ("c1", "c2")]))
        )
    envs.joinpath("local-synth.json").write_text(
        json.dumps(_env("local-synth", [_synth_cam(c, str(tmp / "src" / "synth" / c)) for c in ("c1", "c2")]))
    )
    if (SHARED_DATA / "multiview-dev").is_dir():
        cams = _split_real(tmp)
        raw = json.loads((SHARED_DATA / "multiview-dev" / "environment.json").read_text())
        for c in cams:
            upload(direct, BUCKET, f"real/{c['id']}/", sorted((tmp / "real" / c["id"]).iterdir()))
        local = [{**c, "video": str(tmp / "real" / c["id"])} for c in cams]
        remote = [{**c, "video": {"s3_prefix": f"real/{c['id']}/"}} for c in cams]
        for env_id, cs in (("real-local", local), ("real-s3", remote)):
            envs.joinpath(f"{env_id}.json").write_text(
                json.dumps({**_env(env_id, cs), "map": raw["map"] | {"image": None}})
            )
    settings = Settings(
        **s3_settings(
            proxy,
            tmp,
            environments_dir=envs,
            s3_bucket=BUCKET,
            s3_download_timeout_s=6.0,
            playback_speed=0.0,
            status_interval_s=0.2,
            publish_queue_size=10_000,
        )
    )
    with live_server(settings) as base:
        yield base, proxy


async def _collect(ws_url: str) -> tuple[list[Any], list[dict[str, Any]]]:
    frames: list[Any] = []
    messages: list[dict[str, Any]] = []
    async with websockets.connect(ws_url, compression=None, max_size=2**24) as ws:
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    frames.append(unpack_frame(msg)[0])
                else:
                    messages.append(json.loads(msg))
        except websockets.ConnectionClosed:
            pass
    return frames, messages


def run_task(base: str, env_id: str) -> tuple[dict[str, Any], list[Any], list[dict[str, Any]]]:
    r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": env_id})
    assert r.status_code == 202, r.text
    started = r.json()
    frames, messages = asyncio.run(_collect(started["websocket_url"]))
    return httpx.get(started["status_url"]).json(), frames, messages


def updates(messages: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {m["global_frame_index"]: m for m in messages if m["type"] == "tracking_update"}


def test_a_task_on_s3_streams_like_the_same_task_on_local_files(server: tuple[str, FaultProxy]) -> None:
    base, _ = server
    local_status, local_frames, _ = run_task(base, "local-synth")
    status, frames, messages = run_task(base, "s3-synth")
    assert status["status"] == local_status["status"] == "COMPLETED", status
    assert status["frames_processed"] == TASK_FRAMES and status["frames_skipped"] == 0
    # pictures: a client keeps only the newest frame per camera when it falls behind (and joins after the first
    # frames of an unpaced task), so which ones arrive depends on timing; what arrives is in order, from the
    # right frames, and ends with each camera's last frame, from S3 as from local files
    expected = {(c, i) for c in ("c1", "c2") for i in range(TASK_FRAMES)}
    for got in (frames, local_frames):
        seen = [(h.camera_id, h.frame_index) for h in got]
        assert set(seen) <= expected
        for cam in ("c1", "c2"):
            order = [i for c, i in seen if c == cam]
            assert order == sorted(order) and order[-1] == TASK_FRAMES - 1, (cam, order)
    ups = updates(messages)
    assert sorted(ups) == list(range(TASK_FRAMES))
    for g, u in ups.items():  # frame indices continue across the sub-video boundaries
        assert {c: v["frame_index"] for c, v in u["cameras"].items()} == {"c1": g, "c2": g}
    assert messages[-1]["type"] == "status_update" and messages[-1]["status"] == "COMPLETED"


def test_real_video_tracks_identically_from_s3_and_across_sub_video_boundaries(
    server: tuple[str, FaultProxy],
) -> None:
    base, _ = server
    if not (SHARED_DATA / "multiview-dev").is_dir():
        pytest.skip("shared test data not found")
    _, _, local_msgs = run_task(base, "real-local")
    status, _, messages = run_task(base, "real-s3")
    assert status["status"] == "COMPLETED", status
    local, remote = updates(local_msgs), updates(messages)
    assert sorted(remote) == list(range(REAL_FRAMES))

    def tracks(u: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
        return {c: sorted((t["track_id"], t["global_id"]) for t in v["tracks"]) for c, v in u["cameras"].items()}

    # same sub-videos, same models: the S3 task is the local one, track for track
    assert all(tracks(remote[g]) == tracks(local[g]) for g in remote)
    # and the trackers ran through the boundaries: tracks alive just before one are alive just after
    per = REAL_FRAMES // REAL_SEGMENTS
    for b in range(per, REAL_FRAMES, per):
        for cam in remote[b]["cameras"]:
            before = {t["track_id"] for t in remote[b - 1]["cameras"][cam]["tracks"]}
            after = {t["track_id"] for t in remote[b]["cameras"][cam]["tracks"]}
            assert before, f"no tracks before the boundary at {b} in {cam}"
            assert len(before & after) >= 0.5 * len(before), (b, cam, before, after)


def test_concurrent_tasks_share_the_cache_one_download_per_object(server: tuple[str, FaultProxy]) -> None:
    base, proxy = server
    for c in ("c1", "c2"):
        proxy.inject("slow", f"conc/{c}/sub_video_01.mp4", seconds=1.0)
    results: list[tuple[dict[str, Any], list[Any], list[dict[str, Any]]]] = []
    runners = [threading.Thread(target=lambda: results.append(run_task(base, "s3-conc"))) for _ in range(2)]
    for t in runners:
        t.start()
    for t in runners:
        t.join(WAIT * 2)
    assert [r[0]["status"] for r in results] == ["COMPLETED", "COMPLETED"]
    assert all(r[0]["frames_processed"] == TASK_FRAMES for r in results)
    for c in ("c1", "c2"):
        for k in (1, 2, 3):
            assert len(proxy.gets(f"conc/{c}/sub_video_0{k}.mp4")) == 1, (c, k)


def test_a_task_whose_store_keeps_failing_fails_with_a_clear_error(server: tuple[str, FaultProxy]) -> None:
    base, proxy = server
    proxy.inject("500", "fail/", times=-1)
    try:
        status, _, messages = run_task(base, "s3-fail")
    finally:
        proxy.clear_faults()
    assert status["status"] == "FAILED"
    assert "camera 'c1'" in status["details"] or "camera 'c2'" in status["details"]
    assert "failed after" in status["details"] and "HTTP 500" in status["details"]
    assert messages[-1]["type"] == "status_update" and messages[-1]["status"] == "FAILED"


@pytest.mark.parametrize(("env_id", "bad"), [("s3-notvideo-first", 1), ("s3-notvideo-later", 2)])
def test_an_s3_object_that_is_not_a_video_fails_the_task_naming_camera_and_object(
    server: tuple[str, FaultProxy], env_id: str, bad: int
) -> None:
    base, _ = server
    status, frames, messages = run_task(base, env_id)
    assert status["status"] == "FAILED"
    assert "camera 'c2'" in status["details"] and f"sub_video_{bad:02d}.mp4" in status["details"], status["details"]
    assert messages[-1]["type"] == "status_update" and messages[-1]["status"] == "FAILED"
    if bad == 2:  # the first sub-video played before the failure
        # every frame the reader assembled went out (it finds the break while reading ahead for the last one):
        # their tracking updates all arrive, while pictures of an unpaced task may not (a client keeps only the
        # newest per camera when it falls behind and may join after the first ones)
        assert set(updates(messages)) >= set(range(TASK_SEGMENT_FRAMES - 1)), sorted(updates(messages))
        assert all(f.global_frame_index < TASK_SEGMENT_FRAMES for f in frames)
    assert httpx.get(base + "/health").status_code == 200


def test_status_shows_downloading_with_progress_while_the_first_sub_videos_arrive(
    server: tuple[str, FaultProxy],
) -> None:
    base, proxy = server
    for c in ("c1", "c2"):
        proxy.inject("slow", f"slow/{c}/sub_video_01.mp4", seconds=1.5)
    r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "s3-slow"})
    started = r.json()
    ws_result: list[tuple[list[Any], list[dict[str, Any]]]] = []
    ws = threading.Thread(target=lambda: ws_result.append(asyncio.run(_collect(started["websocket_url"]))))
    ws.start()
    polled: list[tuple[str, float, str]] = []
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        s = httpx.get(started["status_url"]).json()
        polled.append((s["status"], s["progress"], s["details"]))
        if s["status"] in ("COMPLETED", "FAILED", "STOPPED"):
            break
        time.sleep(0.05)
    ws.join(WAIT)
    assert polled[-1][0] == "COMPLETED", polled[-1]
    downloading = [p for p in polled if p[0] == "DOWNLOADING"]
    assert downloading, polled
    assert any(0.0 < p[1] < 1.0 and "MiB" in p[2] for p in downloading)
    _, messages = ws_result[0]
    assert any(m["type"] == "status_update" and m["status"] == "DOWNLOADING" for m in messages)


def test_a_task_stopped_while_downloading_stops_at_once(server: tuple[str, FaultProxy]) -> None:
    base, proxy = server
    proxy.inject("stall", "stopme/c1/sub_video_01.mp4", times=-1, seconds=10.0)
    try:
        r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "s3-stopme"})
        started = r.json()
        assert eventually(lambda: httpx.get(started["status_url"]).json()["status"] == "DOWNLOADING")
        httpx.post(f"{base}/api/v1/processing-tasks/{started['task_id']}/stop")
        assert eventually(lambda: httpx.get(started["status_url"]).json()["status"] == "STOPPED")
        assert httpx.get(started["status_url"]).json()["details"] == "stopped on request"
    finally:
        proxy.clear_faults()
