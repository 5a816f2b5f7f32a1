"""Limits that keep one caller from taking the server: task starts per minute, running tasks per key, request
body size (docs/security.md)."""

from __future__ import annotations

import time
from collections import deque

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class StartRateLimiter:
    """A sliding one-minute window of task starts per key (bounded: one deque of at most ``per_minute``)."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._starts: dict[str, deque[float]] = {}

    def check(self, key: str, now: float | None = None) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic() if now is None else now
        window = self._starts.setdefault(key, deque(maxlen=self.per_minute))
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            retry = max(1, int(60.0 - (now - window[0])) + 1)
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"at most {self.per_minute} task starts per minute per key; retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )
        window.append(now)


class BodySizeLimit:
    """413 for a request body over ``limit`` bytes: by Content-Length at once, or while a chunked body streams."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await _too_large(send, self.limit)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLarge:
            await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body larger than {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
