"""The S3 store and its local cache against a real S3 protocol server (moto) behind a fault-injecting proxy:
verified atomic downloads, one download per object, retries and resume through injected faults, a clear
failure in bounded time, and least-recently-used eviction that never touches a file in use."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.config import Settings
from app.services.environments import CameraSpec, S3Location
from app.services.video_cache import CacheTooSmallError, VideoCache
from app.services.video_sources.base import SubVideo, VideoStoreError
from app.services.video_sources.io_loop import IoLoop
from app.services.video_sources.s3 import S3Config, S3VideoStore
from tests.s3_server import FaultProxy, s3_settings, s3_with_faults

BUCKET = "cache-tests"
WAIT = 60.0  # generous upper bound on any single fetch; faults are bounded far below it


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[FaultProxy, Any]]:
    with s3_with_faults() as (proxy, direct):
        direct.create_bucket(Bucket=BUCKET)
        yield proxy, direct


@pytest.fixture
def proxy(s3: tuple[FaultProxy, Any]) -> Iterator[FaultProxy]:
    s3[0].clear_faults()
    yield s3[0]
    s3[0].clear_faults()


@pytest.fixture
def direct(s3: tuple[FaultProxy, Any]) -> Any:
    return s3[1]


@contextmanager
def s3_store(proxy: FaultProxy, tmp: Path, **overrides: Any) -> Iterator[S3VideoStore]:
    settings = Settings(**s3_settings(proxy, tmp, **overrides))
    assert settings.video_cache_dir is not None
    cache = VideoCache(settings.video_cache_dir, int(settings.video_cache_max_size))
    store = S3VideoStore(S3Config.from_settings(settings), cache, IoLoop())
    try:
        yield store
    finally:
        store.close()


def camera(prefix: str, bucket: str | None = BUCKET) -> CameraSpec:
    return CameraSpec("c1", "c1", S3Location(bucket, prefix), 160, 120, 10.0, np.eye(3))


def put(direct: Any, key: str, size: int) -> bytes:
    data = os.urandom(size)
    direct.put_object(Bucket=BUCKET, Key=key, Body=data)
    return data


def only(store: S3VideoStore, prefix: str) -> SubVideo:
    (sub,) = store.list_sub_videos(camera(prefix)).result(WAIT)
    return sub


def files(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_listing_is_natural_order_of_sub_videos_only(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    for key in ("ls/c1/sub_video_10.mp4", "ls/c1/sub_video_2.mp4", "ls/c1/sub_video_1.mp4", "ls/c1/notes.txt"):
        put(direct, key, 100)
    put(direct, "ls/c1/nested/sub_video_03.mp4", 100)
    put(direct, "ls/c1/empty.mp4", 0)
    with s3_store(proxy, tmp_path) as store:
        subs = store.list_sub_videos(camera("ls/c1/")).result(WAIT)
        assert [s.name for s in subs] == ["sub_video_1.mp4", "sub_video_2.mp4", "sub_video_10.mp4"]
        assert all(s.uri == f"s3://{BUCKET}/ls/c1/{s.name}" and s.size == 100 and s.etag for s in subs)
        with pytest.raises(VideoStoreError, match=r"no sub-videos .* under s3://cache-tests/ls/none/"):
            store.list_sub_videos(camera("ls/none/")).result(WAIT)
        with pytest.raises(VideoStoreError, match="SPOTON_S3_BUCKET"):
            store.list_sub_videos(camera("ls/c1/", bucket=None)).result(WAIT)


def test_download_is_verified_published_atomically_and_reused(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    data = put(direct, "dl/c1/sub_video_01.mp4", 300_000)
    cache_dir = tmp_path / "video-cache"
    with s3_store(proxy, tmp_path) as store:
        sub = only(store, "dl/c1/")
        lease = store.fetch(sub).result(WAIT)
        assert lease.path.parent == cache_dir and lease.path.read_bytes() == data
        assert not list(cache_dir.glob("*.part"))
        again = store.fetch(sub).result(WAIT)
        assert again.path == lease.path
        assert len(proxy.gets("dl/c1/sub_video_01.mp4")) == 1
        assert store.cache.pins(lease.path.name) == 2
        lease.release()
        again.release()
        again.release()  # idempotent
        assert store.cache.pins(lease.path.name) == 0
    (cache_dir / "0123.part").write_bytes(b"left over by a crash")
    with s3_store(proxy, tmp_path) as store:  # a restarted server finds the file and drops the leftover
        assert store.fetch(sub).result(WAIT).path.read_bytes() == data
        assert len(proxy.gets("dl/c1/sub_video_01.mp4")) == 1
        assert not (cache_dir / "0123.part").exists()


def test_concurrent_requests_share_one_download_with_progress(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    data = put(direct, "conc/c1/sub_video_01.mp4", 400_000)
    proxy.inject("slow", "conc/c1/sub_video_01.mp4", seconds=1.0)
    with s3_store(proxy, tmp_path) as store:
        sub = only(store, "conc/c1/")
        results: list[Path] = []

        def want() -> None:
            results.append(store.fetch(sub).result(WAIT).path)

        threads = [threading.Thread(target=want) for _ in range(5)]
        for t in threads:
            t.start()
        partial = set()
        while any(t.is_alive() for t in threads):
            partial.add(store.bytes_ready(sub))
            time.sleep(0.02)
        for t in threads:
            t.join()
        assert len(results) == 5 and len(set(results)) == 1 and results[0].read_bytes() == data
        assert len(proxy.gets("conc/c1/sub_video_01.mp4")) == 1
        assert any(0 < b < len(data) for b in partial), "progress is visible while the body arrives"
        assert store.cache.pins(results[0].name) == 5


def test_server_errors_are_retried(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    data = put(direct, "r500/c1/sub_video_01.mp4", 50_000)
    proxy.inject("500", "r500/c1/sub_video_01.mp4", times=2)
    with s3_store(proxy, tmp_path) as store:
        lease = store.fetch(only(store, "r500/c1/")).result(WAIT)
        assert lease.path.read_bytes() == data
    assert len(proxy.gets("r500/c1/sub_video_01.mp4")) == 3


@pytest.mark.parametrize("fault", ["cut", "stall"])
def test_broken_body_is_resumed_with_a_range_request(
    fault: str, proxy: FaultProxy, direct: Any, tmp_path: Path
) -> None:
    key = f"{fault}/c1/sub_video_01.mp4"
    data = put(direct, key, 500_000)
    proxy.inject(fault, key, seconds=10.0)
    with s3_store(proxy, tmp_path, s3_stall_timeout_s=1.0) as store:
        lease = store.fetch(only(store, f"{fault}/c1/")).result(WAIT)
        assert lease.path.read_bytes() == data
    first, second = proxy.gets(key)
    assert "range" not in first.headers
    start = int(second.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start < len(data)
    assert second.headers.get("if-match"), "a resumed download is pinned to the listed version"


def test_corrupt_body_fails_its_md5_and_is_downloaded_again(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    data = put(direct, "bad/c1/sub_video_01.mp4", 80_000)
    proxy.inject("corrupt", "bad/c1/sub_video_01.mp4")
    with s3_store(proxy, tmp_path) as store:
        lease = store.fetch(only(store, "bad/c1/")).result(WAIT)
        assert lease.path.read_bytes() == data
    _, second = proxy.gets("bad/c1/sub_video_01.mp4")
    assert "range" not in second.headers  # a corrupt file is restarted, not resumed


@pytest.mark.parametrize(("fault", "reason"), [("500", r"InternalError \(HTTP 500\)"), ("stall", "timed out")])
def test_persistent_failure_is_a_clear_error_after_the_time_bound(
    fault: str, reason: str, proxy: FaultProxy, direct: Any, tmp_path: Path
) -> None:
    key = f"down-{fault}/c1/sub_video_01.mp4"
    put(direct, key, 50_000)
    stall_timeout = 0.3 if fault == "stall" else 5.0
    with s3_store(proxy, tmp_path, s3_download_timeout_s=3.0, s3_stall_timeout_s=stall_timeout) as store:
        sub = only(store, f"down-{fault}/c1/")
        proxy.inject(fault, key, times=-1, seconds=3.0)
        with pytest.raises(VideoStoreError, match=rf"s3://{BUCKET}/{key}: failed after \d+ attempt\(s\) .*{reason}"):
            store.fetch(sub).result(WAIT)
        assert len(proxy.gets(key)) >= 2
        assert files(tmp_path / "video-cache") == set(), "nothing half-written is left behind"


def test_missing_object_fails_at_once_without_retries(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    ghost = SubVideo(
        "sub_video_01.mp4", f"s3://{BUCKET}/ghost/sub_video_01.mp4", "ghost/sub_video_01.mp4", 10, None, BUCKET
    )
    with s3_store(proxy, tmp_path) as store, pytest.raises(VideoStoreError, match=r"NoSuchKey \(HTTP 404\)"):
        store.fetch(ghost).result(WAIT)
    assert len(proxy.gets("ghost/sub_video_01.mp4")) == 1


def test_lru_eviction_never_evicts_a_file_in_use(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    for i in range(1, 5):
        put(direct, f"lru/c1/sub_video_0{i}.mp4", 10_000)
    with s3_store(proxy, tmp_path, video_cache_max_size=25_000) as store:
        s1, s2, s3_, s4 = store.list_sub_videos(camera("lru/c1/")).result(WAIT)
        held = store.fetch(s1).result(WAIT)  # oldest, but in use
        store.fetch(s2).result(WAIT).release()
        l3 = store.fetch(s3_).result(WAIT)
        cache = store.cache
        assert cache.contains(store.name(s1)) and cache.contains(store.name(s3_))
        assert not cache.contains(store.name(s2)), "the least recently used idle file goes first"
        assert held.path.exists()
        held.release()
        l3.release()
        store.fetch(s4).result(WAIT).release()
        assert set(cache.names()) == {store.name(s3_), store.name(s4)}
        assert files(cache.directory) == set(cache.names())
        assert cache.used_bytes <= 25_000


def test_files_in_use_may_overflow_the_bound_until_released(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    for i in range(1, 4):
        put(direct, f"over/c1/sub_video_0{i}.mp4", 10_000)
    with s3_store(proxy, tmp_path, video_cache_max_size=15_000) as store:
        leases = [store.fetch(s).result(WAIT) for s in store.list_sub_videos(camera("over/c1/")).result(WAIT)]
        assert all(lease.path.exists() for lease in leases) and store.cache.used_bytes == 30_000
        for lease in leases:
            lease.release()
        assert store.cache.used_bytes <= 15_000
        assert files(store.cache.directory) == set(store.cache.names())


def test_an_object_larger_than_the_cache_is_refused_clearly(proxy: FaultProxy, direct: Any, tmp_path: Path) -> None:
    put(direct, "huge/c1/sub_video_01.mp4", 30_000)
    with s3_store(proxy, tmp_path, video_cache_max_size=20_000) as store:
        with pytest.raises(CacheTooSmallError, match=r"larger than the whole video cache.*SPOTON_VIDEO_CACHE_MAX_SIZE"):
            store.fetch(only(store, "huge/c1/")).result(WAIT)
        assert proxy.gets("huge/c1/sub_video_01.mp4") == []
