"""The tracking WebSocket against hostile clients (auth on, a task running): garbage first messages, wrong
types, huge messages, binary where text is expected, floods after auth. Nothing is ever sent before a valid
``auth`` message, each bad client gets its documented close code, and the task, its other clients and the server
carry on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.config import Settings
from tests.live_server import live_server
from tests.test_e2e import make_clip
from tests.ws_support import watch

KEY = "viewer-and-more-0123456789abcdef"
OPERATOR = "operator-key-0123456789abcdef0"
MAX_MESSAGE = 1 << 20  # uvicorn's ws_max_size (app/utils/server.py)


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("ws-fuzz")
    clip = make_clip(tmp, 200)
    settings = Settings(
        environments_dir=tmp / "none",
        extra_environments=[clip],
        playback_speed=0.5,  # ~57 s of frames: the task outlives the test
        api_keys=f"viewer:{KEY},operator:{OPERATOR}",
        ws_auth_timeout_s=2.0,
        data_dir=tmp / "data",
    )
    with live_server(settings) as base:
        r = httpx.post(
            base + "/api/v1/processing-tasks/start",
            json={"environment_id": "clip"},
            headers={"Authorization": f"Bearer {OPERATOR}"},
        )
        assert r.status_code == 202
        task = r.json()["task_id"]
        yield base, base.replace("http://", "ws://") + f"/ws/tracking/{task}"
        httpx.post(f"{base}/api/v1/processing-tasks/{task}/stop", headers={"Authorization": f"Bearer {OPERATOR}"})


async def _first_message(url: str, first: str | bytes) -> tuple[int | None, int]:
    """(close code, binary frames received) after sending ``first`` as the first message."""
    frames = 0
    async with websockets.connect(url, compression=None, max_size=2**24) as ws:
        await ws.send(first)
        try:
            async for msg in ws:
                if isinstance(msg, bytes):
                    frames += 1
        except websockets.ConnectionClosed:
            pass
        return ws.close_code, frames


def _run(coro: object, timeout: float = 30.0) -> object:
    return asyncio.run(asyncio.wait_for(coro, timeout))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "first",
    [
        b"\x00\xff" * 64,
        "not json at all",
        "",
        "null",
        "[]",
        '"auth"',
        '{"type": "auth"}',
        '{"type": "auth", "token": 12345678901234567890}',
        '{"type": "auth", "token": null}',
        '{"type": "auth", "token": ["' + KEY + '"]}',
        '{"type": ["auth"], "token": "' + KEY + '"}',
        '{"type": "AUTH", "token": "' + KEY + '"}',
        '{"type": "auth", "token": "' + KEY + ' "}',
        json.dumps({"type": "auth", "token": "x" * 100_000}),
        "{" * 50_000,
        KEY.encode(),  # the right key, but as a binary message
    ],
)
def test_a_bad_first_message_is_refused_before_anything_is_sent(stream: tuple[str, str], first: str | bytes) -> None:
    code, frames = _run(_first_message(stream[1], first))  # type: ignore[misc]
    assert (code, frames) == (4401, 0)


def test_a_first_message_larger_than_the_limit_closes_with_1009(stream: tuple[str, str]) -> None:
    code, frames = _run(_first_message(stream[1], "a" * (MAX_MESSAGE + 1)))  # type: ignore[misc]
    assert (code, frames) == (1009, 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.one_of(
        st.binary(max_size=256),
        st.text(max_size=256),
        st.dictionaries(
            st.sampled_from(["type", "token", "auth", "x"]), st.none() | st.integers() | st.text(max_size=40)
        ).map(json.dumps),
    )
)
def test_random_first_messages_never_get_a_frame(stream: tuple[str, str], first: str | bytes) -> None:
    code, frames = _run(_first_message(stream[1], first))  # type: ignore[misc]
    assert frames == 0 and code == 4401


async def _abuse_after_auth(url: str) -> tuple[int, int | None]:
    """Authenticate, then send garbage of every kind; frames must keep coming. Returns frames received after
    the garbage, and the close code of a client that then sends an oversized message."""
    async with websockets.connect(url, compression=None, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "auth", "token": KEY}))
        for junk in (b"\x00" * 1000, "{]", '{"type": "auth", "token": 5}', "[" * 1000, "x" * (MAX_MESSAGE // 2)):
            await ws.send(junk)
        for i in range(200):
            await ws.send(json.dumps({"type": "ping", "n": i}))
        after = 0
        async for msg in ws:
            if isinstance(msg, bytes):
                after += 1
                if after >= 4:
                    break
    async with websockets.connect(url, compression=None, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "auth", "token": KEY}))
        await ws.send(b"z" * (MAX_MESSAGE + 1))
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass
        return after, ws.close_code


def test_garbage_after_auth_is_ignored_and_an_oversized_message_only_closes_that_client(
    stream: tuple[str, str],
) -> None:
    base, url = stream

    async def both() -> tuple[tuple[int, int | None], int]:
        bystander = asyncio.create_task(watch(url, 12, KEY))
        abused = await _abuse_after_auth(url)
        return abused, await bystander

    (after, code), seen = _run(both(), 90)  # type: ignore[misc]
    assert after >= 4 and code == 1009
    assert seen == 12  # a well-behaved client of the same task streamed on
    assert httpx.get(base + "/health").status_code == 200
    assert _run(watch(url, 2, KEY)) == 2  # and new clients still can


def test_an_unknown_task_and_a_silent_client_are_closed(stream: tuple[str, str]) -> None:
    base, url = stream
    silent_url = url

    async def silent() -> int | None:
        async with websockets.connect(silent_url, compression=None) as ws:
            try:
                async for _ in ws:
                    pass
            except websockets.ConnectionClosed:
                pass
            return ws.close_code

    assert _run(silent(), 20) == 4401  # no auth message within SPOTON_WS_AUTH_TIMEOUT_S
    unknown = base.replace("http://", "ws://") + "/ws/tracking/" + "f" * 500
    code, frames = _run(_first_message(unknown, json.dumps({"type": "auth", "token": KEY})))  # type: ignore[misc]
    assert (code, frames) == (4404, 0)


def test_payloads_with_odd_task_ids_never_reach_a_stream(stream: tuple[str, str]) -> None:
    base, _ = stream
    for task_id in ("..%2F..%2Fetc%2Fpasswd", "%00", "' OR 1=1 --", "é" * 40):
        url = base.replace("http://", "ws://") + "/ws/tracking/" + task_id
        try:
            code, frames = _run(_first_message(url, json.dumps({"type": "auth", "token": KEY})))  # type: ignore[misc]
        except websockets.InvalidStatus as exc:  # refused at the handshake: no such route, or a bad request line
            assert exc.response.status_code in (400, 403)
            continue
        assert frames == 0 and code == 4404
