"""Running our ASGI app under uvicorn: the CLI server, and an embedded one inside our own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Generator
from typing import Any

import httpx
import uvicorn


def uvicorn_config(app: Any, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    # permessage-deflate costs ~30x throughput on JPEG frames that do not compress anyway.
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level.lower(),
        ws_per_message_deflate=False,
        ws_max_size=1 << 20,
        lifespan="on",
    )


class EmbeddedServer(uvicorn.Server):
    """A server inside a caller's event loop; the caller handles Ctrl-C itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_healthy(base: str, server: uvicorn.Server, timeout: float = 600.0) -> dict[str, Any]:
    """Poll ``/health`` until 200; fail fast when the server stops or reports ``unhealthy``."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.should_exit:
                raise RuntimeError("server stopped during start-up")
            with contextlib.suppress(httpx.TransportError):
                r = await client.get("/health")
                body: dict[str, Any] = r.json()
                if r.status_code == 200:
                    return body
                if body.get("status") == "unhealthy":
                    raise RuntimeError(f"server unhealthy: {body}")
            await asyncio.sleep(0.5)
    raise TimeoutError("server did not become healthy in time")
