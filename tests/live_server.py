"""A real uvicorn server on a free loopback port, in a background thread, for end-to-end tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn

from app.core.config import Settings
from app.main import create_app
from app.utils.server import free_port, uvicorn_config


@contextmanager
def live_server(settings: Settings, ready_timeout: float = 300.0, port: int | None = None) -> Iterator[str]:
    port = port or free_port()
    server = uvicorn.Server(uvicorn_config(create_app(settings), "127.0.0.1", port, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    try:
        while True:
            try:
                r = httpx.get(base + "/health", timeout=5)
                if r.status_code == 200:
                    break
                if r.json().get("status") == "unhealthy":
                    raise RuntimeError(f"server unhealthy: {r.text}")
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("server did not become healthy")
            time.sleep(0.3)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
