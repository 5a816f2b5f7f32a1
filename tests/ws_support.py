"""WebSocket clients the tests share: how a stream answers a first message, and watching a few frames."""

from __future__ import annotations

import json

import websockets


async def first_message_outcome(url: str, first: str | None, origin: str | None = None) -> tuple[int | None, int]:
    """Send ``first`` (if any) and read: (None, 2) once two binary frames arrived (the stream is open), else the
    close code — or the HTTP status when the handshake was refused — and the frames seen before."""
    frames = 0
    headers = {"Origin": origin} if origin else None
    try:
        async with websockets.connect(url, compression=None, max_size=2**24, additional_headers=headers) as ws:
            if first is not None:
                await ws.send(first)
            try:
                async for msg in ws:
                    if isinstance(msg, bytes):
                        frames += 1
                        if frames >= 2:
                            return None, frames
            except websockets.ConnectionClosed:
                pass
            return ws.close_code, frames
    except websockets.InvalidStatus as exc:
        return exc.response.status_code, frames


async def watch(url: str, frames: int, token: str | None = None) -> int:
    """Binary frames received until ``frames`` arrived or the stream ended (after an auth message with ``token``)."""
    async with websockets.connect(url, compression=None, max_size=2**24) as ws:
        if token is not None:
            await ws.send(json.dumps({"type": "auth", "token": token}))
        got = 0
        async for msg in ws:
            if isinstance(msg, bytes):
                got += 1
                if got >= frames:
                    break
        return got
