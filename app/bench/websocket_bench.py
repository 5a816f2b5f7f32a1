"""``spoton bench websocket``: loopback binary WebSocket throughput, with and without permessage-deflate.

The server side is uvicorn with the same settings as ours and our own per-client outbox (``ClientOutbox``)
in front of ``send_bytes``, so the figure is the ceiling of the real send path, not of a bare socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from app.services.notifications import ClientOutbox, FrameMessage
from app.utils.server import EmbeddedServer, free_port


def _app(n: int, size: int) -> Starlette:
    payload = os.urandom(size)  # incompressible, like JPEG

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        box = ClientOutbox()
        for i in range(n):
            box.offer_frame(FrameMessage(f"c{i % 4}", payload, time.monotonic()))
            msg = await box.get()
            assert isinstance(msg.data, bytes)
            await ws.send_bytes(msg.data)
        await ws.close()

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


async def _measure(n: int, size: int, deflate: bool) -> dict[str, Any]:
    port = free_port()
    config = uvicorn.Config(
        _app(n, size), host="127.0.0.1", port=port, log_level="warning", ws_per_message_deflate=deflate
    )
    server = EmbeddedServer(config)
    serve = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    got = 0
    try:
        compression = "deflate" if deflate else None
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", compression=compression, max_size=2**24) as ws:
            t0 = time.perf_counter()
            with contextlib.suppress(websockets.ConnectionClosed):
                async for _ in ws:
                    got += 1
            dt = time.perf_counter() - t0
    finally:
        server.should_exit = True
        await serve
    return {
        "permessage_deflate": deflate,
        "messages": got,
        "message_kb": size / 1024,
        "seconds": round(dt, 3),
        "messages_per_s": round(got / dt),
        "mb_per_s": round(got * size / dt / 2**20, 1),
    }


async def run_websocket_bench(messages: int = 20000, size_kb: int = 80) -> list[dict[str, Any]]:
    size = size_kb * 1024
    off = await _measure(messages, size, deflate=False)
    on = await _measure(max(200, messages // 20), size, deflate=True)
    return [off, on]


def print_report(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(
            f"websocket bench: {r['messages']} messages of {r['message_kb']:.0f} KB, "
            f"permessage-deflate {'on ' if r['permessage_deflate'] else 'off'}: "
            f"{r['messages_per_s']} msg/s ({r['mb_per_s']} MB/s)"
        )
