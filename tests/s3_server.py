"""A real S3 protocol server for tests: moto in server mode on 127.0.0.1, behind a fault-injecting proxy.

The product's client speaks real HTTP S3 to the proxy, which forwards to moto and can, per matching
request, answer 500, cut the body half-way, stall mid-body, flip a byte, or trickle the body slowly. It
logs every request (method, target, headers) so tests can count downloads. Loopback only; every fault is
bounded in time and the proxy cancels its handlers when stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import cv2
import numpy as np
from moto.server import ThreadedMotoServer

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


@dataclass
class Fault:
    kind: str
    """``500`` | ``cut`` | ``stall`` | ``corrupt`` | ``slow``"""
    match: str
    """Applies to requests whose target (path and query) contains this."""
    times: int = 1
    """How many matching requests it hits; -1: all of them."""
    seconds: float = 1.0
    """``stall``: how long to hold the connection; ``slow``: how long the whole body takes."""


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.requests: list[Request] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fault-proxy")
        self._server: asyncio.Server | None = None
        self.port = 0

    # -- control --------------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, kind: str, match: str, times: int = 1, seconds: float = 1.0) -> None:
        with self._lock:
            self._faults.append(Fault(kind, match, times, seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def gets(self, match: str) -> list[Request]:
        """Object downloads (GETs that are not listings) whose target contains ``match``."""
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and match in r.target and "list-type" not in r.target]

    def seen(self, match: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if match in r.target]

    def _take(self, target: str) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.match in target and f.times != 0:
                    if f.times > 0:
                        f.times -= 1
                    return f
        return None

    # -- server ---------------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def serve() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        self._loop.run_until_complete(serve())
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            with self._lock:
                self.requests.append(Request(method, target, headers))
            fault = self._take(target)
            if fault is not None and fault.kind == "500":
                xml = b"<?xml version='1.0'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(xml)}\r\nConnection: close\r\n\r\n".encode()
                    + xml
                )
                await writer.drain()
                return
            status_headers, payload = await self._forward(method, target, headers, body)
            writer.write(status_headers)
            if fault is None or fault.kind not in ("cut", "stall", "corrupt", "slow"):
                writer.write(payload)
            elif fault.kind == "corrupt":
                bad = bytearray(payload)
                if bad:
                    bad[len(bad) // 2] ^= 0xFF
                writer.write(bytes(bad))
            elif fault.kind == "slow":
                steps = 20
                for i in range(steps):
                    writer.write(payload[i * len(payload) // steps : (i + 1) * len(payload) // steps])
                    await writer.drain()
                    await asyncio.sleep(fault.seconds / steps)
            else:
                writer.write(payload[: len(payload) // 2])
                await writer.drain()
                # stall: hold the connection silent; cut: close it mid-body once the client has the first half
                await asyncio.sleep(fault.seconds if fault.kind == "stall" else 0.3)
                return
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is stopping: end quietly rather than leave a cancelled handler to be reported
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> tuple[bytes, bytes]:
        """Send the request to moto with ``Connection: close``; the response head (made ``close`` too) and body."""
        r, w = await asyncio.open_connection(*self.upstream)
        fwd = {k: v for k, v in headers.items() if k not in ("connection", "keep-alive")}
        fwd["connection"] = "close"
        w.write(f"{method} {target} HTTP/1.1\r\n".encode() + "".join(f"{k}: {v}\r\n" for k, v in fwd.items()).encode())
        w.write(b"\r\n" + body)
        await w.drain()
        raw = await asyncio.wait_for(r.read(), 30)
        w.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        kept = [ln for ln in lines[1:] if ln.split(":", 1)[0].strip().lower() not in ("connection", "content-length")]
        if any(ln.lower().startswith("transfer-encoding: chunked") for ln in kept):
            payload = _dechunk(payload)
            kept = [ln for ln in kept if not ln.lower().startswith("transfer-encoding")]
        if method == "HEAD":
            cl = [ln for ln in lines[1:] if ln.lower().startswith("content-length")]
            out = "\r\n".join([lines[0], *kept, *cl, "Connection: close", "", ""])
            return out.encode("latin-1"), b""
        out = "\r\n".join([lines[0], *kept, f"Content-Length: {len(payload)}", "Connection: close", "", ""])
        return out.encode("latin-1"), payload


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        n = int(size_line.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2 :]
    return bytes(out)


@contextlib.contextmanager
def s3_with_faults() -> Iterator[tuple[FaultProxy, Any]]:
    """moto on a free loopback port, the proxy in front of it, and a boto3 client straight to moto (for
    setting up buckets; the product under test talks to ``proxy.endpoint``)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    proxy = FaultProxy((host, port)).start()
    direct = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name=REGION, **CREDENTIALS)
    try:
        yield proxy, direct
    finally:
        proxy.stop()
        server.stop()


def s3_settings(proxy: FaultProxy, tmp: Path, **overrides: Any) -> dict[str, Any]:
    """Settings that point the product at the proxy, with short, test-sized time bounds."""
    base: dict[str, Any] = {
        "s3_endpoint_url": proxy.endpoint,
        "s3_region": REGION,
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
        "s3_addressing_style": "path",
        "s3_stall_timeout_s": 5.0,
        "s3_download_timeout_s": 20.0,
        "s3_retry_backoff_s": 0.05,
        "video_cache_dir": tmp / "video-cache",
        "data_dir": tmp / "data",
        "environments_dir": tmp / "no-environments",
    }
    base.update(overrides)
    return base


def level(i: int) -> int:
    """Grey level of global frame ``i`` in the synthetic videos: frames can be told apart after decoding."""
    return 20 + (7 * i) % 220


def write_video(path: Path, first: int, n: int, size: tuple[int, int] = (160, 120), fps: float = 10.0) -> Path:
    w, h = size
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for i in range(first, first + n):
        out.write(np.full((h, w, 3), level(i), np.uint8))
    out.release()
    return path


def write_sub_videos(folder: Path, segments: int = 3, frames: int = 10, **kw: Any) -> list[Path]:
    """``sub_video_01.mp4`` … in ``folder``, whose frames continue the grey ramp across files."""
    folder.mkdir(parents=True, exist_ok=True)
    return [write_video(folder / f"sub_video_{k + 1:02d}.mp4", k * frames, frames, **kw) for k in range(segments)]


def upload(client: Any, bucket: str, prefix: str, files: list[Path]) -> None:
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    for f in files:
        client.put_object(Bucket=bucket, Key=f"{prefix}{f.name}", Body=f.read_bytes())
