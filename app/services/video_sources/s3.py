"""Sub-videos under an S3 prefix (AWS or any S3-compatible store), downloaded with aiobotocore into the cache.

Downloads are made to survive real networks:

- each attempt streams ``GetObject`` into the cache's ``.part`` file; a body that stops (no byte for
  ``stall_timeout_s``) or is cut is dropped and the next attempt *resumes* with ``Range: bytes=N-`` (and
  ``If-Match`` on the listed ETag, so a replaced object is never spliced onto an old one);
- errors worth retrying (5xx, throttling, timeouts, dropped connections, short or corrupt bodies) are
  retried with exponential backoff and full jitter; others (403, 404, bad credentials) fail at once;
- the whole of one object, retries included, is bounded by ``download_timeout_s``, after which the error
  says what failed, how often and for how long;
- the finished file is checked for size and, when the ETag is a plain MD5 (single-part upload without
  KMS), for its MD5 before the cache publishes it.

botocore's own retries are off so that this one policy, with its bound, is the only one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import (
    ClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from app.core.config import Settings
from app.services.environments import CameraSpec, S3Location
from app.services.video_cache import VideoCache
from app.services.video_sources.base import (
    Lease,
    SubVideo,
    VideoStoreError,
    failed_future,
    is_sub_video_name,
    natural_key,
)
from app.services.video_sources.io_loop import IoLoop

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_BACKOFF_S = 16.0
RETRY_CODES = {"SlowDown", "RequestTimeout", "RequestTimeoutException", "Throttling", "ThrottlingException"}
MD5_ETAG = re.compile(r"[0-9a-f]{32}")


@dataclass(slots=True, frozen=True)
class S3Config:
    endpoint_url: str | None = None
    region: str | None = None
    default_bucket: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    addressing_style: str = "auto"
    connect_timeout_s: float = 10.0
    stall_timeout_s: float = 30.0
    download_timeout_s: float = 600.0
    retry_backoff_s: float = 0.5
    max_concurrent_downloads: int = 4
    verify_md5: bool = True

    @classmethod
    def from_settings(cls, s: Settings) -> S3Config:
        return cls(
            endpoint_url=s.s3_endpoint_url,
            region=s.s3_region,
            default_bucket=s.s3_bucket,
            access_key_id=s.s3_access_key_id,
            secret_access_key=s.s3_secret_access_key.get_secret_value() if s.s3_secret_access_key else None,
            session_token=s.s3_session_token.get_secret_value() if s.s3_session_token else None,
            addressing_style=s.s3_addressing_style,
            connect_timeout_s=s.s3_connect_timeout_s,
            stall_timeout_s=s.s3_stall_timeout_s,
            download_timeout_s=s.s3_download_timeout_s,
            retry_backoff_s=s.s3_retry_backoff_s,
            max_concurrent_downloads=s.s3_max_concurrent_downloads,
            verify_md5=s.s3_verify_md5,
        )


class _Retryable(Exception):
    """An attempt failed in a way another attempt may not."""


def describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if err.get("Code") == "PreconditionFailed":
            return "the object changed in the store since it was listed (PreconditionFailed, HTTP 412)"
        return f"{err.get('Code', 'error')} (HTTP {status}): {err.get('Message', '')}".rstrip(": ")
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        code = exc.response.get("Error", {}).get("Code", "")
        return status >= 500 or status in (408, 429) or code in RETRY_CODES
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ParamValidationError | NoRegionError):
        return False
    return isinstance(exc, _Retryable | OSError | TimeoutError | aiohttp.ClientError) or (
        type(exc).__module__.startswith(("botocore", "aiobotocore"))
    )


def cache_name(endpoint: str | None, sub: SubVideo) -> str:
    """The cache file of one version of one object: a digest of where it is and which version it is."""
    ident = "\n".join((endpoint or "aws", sub.bucket or "", sub.key, sub.etag or "", str(sub.size)))
    suffix = Path(sub.name).suffix.lower()
    return hashlib.sha1(ident.encode(), usedforsecurity=False).hexdigest() + suffix


class S3VideoStore:
    remote = True

    def __init__(self, config: S3Config, cache: VideoCache, io: IoLoop) -> None:
        self.config = config
        self.cache = cache
        self.io = io
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._client_lock: asyncio.Lock | None = None
        self._slots: asyncio.Semaphore | None = None
        self._progress: dict[str, int] = {}

    # -- VideoStore -----------------------------------------------------------------------------
    def list_sub_videos(self, camera: CameraSpec) -> Future[list[SubVideo]]:
        if not isinstance(camera.video, S3Location):
            return failed_future(VideoStoreError(f"camera '{camera.id}': not an S3 location: {camera.video}"))
        return self.io.submit(self._list(camera.video, camera.id))

    def fetch(self, sub: SubVideo) -> Future[Lease]:
        return self.io.submit(self._fetch(sub))

    def bytes_ready(self, sub: SubVideo) -> int:
        name = self.name(sub)
        return sub.size if self.cache.contains(name) else self._progress.get(name, 0)

    def close(self) -> None:
        self.io.close(self._stack.aclose())

    # -- internals ------------------------------------------------------------------------------
    def name(self, sub: SubVideo) -> str:
        return cache_name(self.config.endpoint_url, sub)

    async def client(self) -> Any:
        if self._client_lock is None:
            self._client_lock = asyncio.Lock()
        async with self._client_lock:
            if self._client is None:
                c = self.config
                cfg = AioConfig(
                    connect_timeout=c.connect_timeout_s,
                    read_timeout=c.stall_timeout_s,
                    retries={"total_max_attempts": 1},
                    s3={"addressing_style": c.addressing_style},
                    max_pool_connections=max(10, 2 * c.max_concurrent_downloads),
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                self._client = await self._stack.enter_async_context(
                    get_session().create_client(
                        "s3",
                        region_name=c.region,
                        endpoint_url=c.endpoint_url,
                        aws_access_key_id=c.access_key_id,
                        aws_secret_access_key=c.secret_access_key,
                        aws_session_token=c.session_token,
                        config=cfg,
                    )
                )
        return self._client

    async def _retrying(self, what: str, attempt_fn: Any) -> Any:
        """Run ``attempt_fn()`` until it succeeds, a non-retryable error, or the time bound."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.config.download_timeout_s
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout_at(deadline):
                    return await attempt_fn()
            except Exception as exc:
                elapsed = loop.time() - start
                if not is_retryable(exc):
                    raise VideoStoreError(f"{what}: {describe(exc)}") from exc
                delay = random.uniform(0, min(MAX_BACKOFF_S, self.config.retry_backoff_s * 2 ** (attempt - 1)))
                if loop.time() + delay >= deadline:
                    raise VideoStoreError(
                        f"{what}: failed after {attempt} attempt(s) in {elapsed:.1f} s "
                        f"(limit {self.config.download_timeout_s:g} s): {describe(exc)}"
                    ) from exc
                log.warning("%s: attempt %d failed (%s); retrying in %.2f s", what, attempt, describe(exc), delay)
                await asyncio.sleep(delay)

    async def _list(self, loc: S3Location, camera_id: str) -> list[SubVideo]:
        bucket = loc.bucket or self.config.default_bucket
        if not bucket:
            raise VideoStoreError(
                f"camera '{camera_id}': video {loc} names no bucket; set SPOTON_S3_BUCKET or use s3://bucket/prefix/"
            )
        where = f"camera '{camera_id}': listing s3://{bucket}/{loc.prefix}"

        async def attempt() -> list[dict[str, Any]]:
            client = await self.client()
            found: list[dict[str, Any]] = []
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=bucket, Prefix=loc.prefix, Delimiter="/"):
                found.extend(page.get("Contents", []))
            return found

        objects: list[dict[str, Any]] = await self._retrying(where, attempt)
        subs: list[SubVideo] = []
        for o in objects:
            key = str(o["Key"])
            name = key[len(loc.prefix) :]
            if not is_sub_video_name(name) or int(o.get("Size", 0)) <= 0:
                continue
            etag = str(o["ETag"]) if o.get("ETag") else None
            subs.append(SubVideo(name, f"s3://{bucket}/{key}", key, int(o["Size"]), etag, bucket))
        if not subs:
            raise VideoStoreError(
                f"camera '{camera_id}': no sub-videos (sub_video_01.mp4, …) under s3://{bucket}/{loc.prefix}"
            )
        return sorted(subs, key=lambda s: natural_key(s.name))

    async def _fetch(self, sub: SubVideo) -> Lease:
        name = self.name(sub)
        return await self.cache.get(name, sub.size, lambda part: self._download(sub, name, part), label=sub.uri)

    async def _download(self, sub: SubVideo, name: str, part: Path) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_concurrent_downloads)
        async with self._slots:
            self._progress[name] = 0
            try:
                await self._retrying(f"downloading {sub.uri}", lambda: self._attempt(sub, name, part))
            finally:
                self._progress.pop(name, None)
            log.info("downloaded %s (%d bytes)", sub.uri, sub.size)

    async def _attempt(self, sub: SubVideo, name: str, part: Path) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset > sub.size:
            offset = 0
        if offset < sub.size:
            await self._get(sub, name, part, offset)
        if self.config.verify_md5 and sub.etag and MD5_ETAG.fullmatch(sub.etag.strip('"')):
            digest = await asyncio.to_thread(_md5, part)
            if digest != sub.etag.strip('"'):
                part.unlink(missing_ok=True)
                raise _Retryable(f"MD5 {digest} does not match ETag {sub.etag}")

    async def _get(self, sub: SubVideo, name: str, part: Path, offset: int) -> None:
        client = await self.client()
        args: dict[str, Any] = {"Bucket": sub.bucket, "Key": sub.key}
        if sub.etag:
            args["IfMatch"] = sub.etag
        if offset:
            args["Range"] = f"bytes={offset}-"
        stall = self.config.stall_timeout_s
        resp = await asyncio.wait_for(client.get_object(**args), stall)
        body = resp["Body"]
        try:
            if offset and resp["ResponseMetadata"]["HTTPStatusCode"] != 206:
                offset = 0  # the store ignored the range: start over
            with open(part, "r+b" if offset else "wb") as f:
                f.seek(offset)
                f.truncate()
                while True:
                    chunk = await asyncio.wait_for(body.read(CHUNK), stall)
                    if not chunk:
                        break
                    f.write(chunk)
                    offset += len(chunk)
                    self._progress[name] = offset
        finally:
            body.close()
        if offset != sub.size:
            raise _Retryable(f"body ended after {offset} of {sub.size} bytes")


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()
