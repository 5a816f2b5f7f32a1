"""Who is calling: API keys on REST (``Authorization: Bearer``), a first ``auth`` message on WebSockets, signed
URLs for MJPEG in ``<img>`` tags, and the WebSocket Origin allowlist (docs/security.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request, WebSocket, status
from starlette.requests import HTTPConnection

from app.core.security import ANONYMOUS, KeyStore, Principal, Role

CLOSE_UNAUTHORIZED = 4401
"""WebSocket: the first message was not ``{"type": "auth", "token": KEY}`` with a valid key, in time."""
CLOSE_FORBIDDEN = 4403
"""WebSocket: the key may not watch this task's environment, or the page's Origin is not allowed."""


_NO_KEYS = KeyStore({}, b"")


def keystore(conn: HTTPConnection) -> KeyStore:
    """The app's keys (``create_app`` loads them from the settings; a bare router in tests has none: open)."""
    store: KeyStore = getattr(conn.app.state, "keys", _NO_KEYS)
    return store


def bearer(conn: HTTPConnection) -> str | None:
    header = conn.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


async def current_principal(request: Request) -> Principal:
    store = keystore(request)
    if not store.enabled:
        return ANONYMOUS
    principal = await store.authenticate_async(bearer(request))
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or invalid API key", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


def require(role: Role) -> Callable[[Principal], Awaitable[Principal]]:
    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if principal.role < role:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key's role ({principal.role.name}) cannot do this")
        return principal

    return check


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]


def check_scope(principal: Principal, environment_id: str) -> None:
    if not principal.may_see(environment_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"this key may not access environment '{environment_id}'")


def origin_allowed(conn: HTTPConnection, extra: str) -> bool:
    """Same origin (the Origin's host:port is the Host the browser connected to), a listed origin, or no Origin
    at all (not a browser: scripts and the CLI). A web page elsewhere cannot open a stream from the user's
    browser."""
    origin = conn.headers.get("origin")
    if not origin:
        return True
    if origin in {o.strip() for o in extra.split(",") if o.strip()}:
        return True
    host = conn.headers.get("host", "")
    return bool(host) and urlsplit(origin).netloc == host


async def authenticate_websocket(websocket: WebSocket, timeout_s: float) -> Principal | None:
    """After ``accept``: the first message must be ``{"type": "auth", "token": KEY}`` (browsers cannot set
    headers on a WebSocket, and a token in the URL would land in logs). None: closed with 4401."""
    store = keystore(websocket)
    if not store.enabled:
        return ANONYMOUS
    principal: Principal | None = None
    try:
        raw = await asyncio.wait_for(websocket.receive_text(), timeout=timeout_s)
        msg = json.loads(raw)
        if isinstance(msg, dict) and msg.get("type") == "auth" and isinstance(msg.get("token"), str):
            principal = await store.authenticate_async(msg["token"])
    except (TimeoutError, ValueError, KeyError, RuntimeError):
        principal = None
    if principal is None:
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="send {\"type\": \"auth\", \"token\": KEY} first")
    return principal
