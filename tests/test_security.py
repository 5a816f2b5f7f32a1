"""Who may watch and who may control (docs/security.md): API keys and roles on REST, the WebSocket's first-message
auth and Origin allowlist, environment scopes, signed stream URLs, security headers — against a real server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from app.cli import main as cli_main
from app.core.config import Settings
from app.core.security import KeyConfigError, KeyStore, Role, digest
from tests.live_server import live_server
from tests.test_e2e import make_clip
from tests.ws_support import first_message_outcome as _ws

VIEWER, OPERATOR = "viewer-key-0123456789abcdef", "operator-key-0123456789abcdef"
SCOPED = "scoped-key-0123456789abcdef0123"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    tmp = tmp_path_factory.mktemp("security")
    clip = make_clip(tmp, 140)
    keys_file = tmp / "keys.json"
    keys_file.write_text(
        json.dumps(
            [
                {
                    "name": "elsewhere",
                    "role": "operator",
                    "sha256": digest(SCOPED),
                    "environments": ["some-other-environment"],
                }
            ]
        )
    )
    settings = Settings(
        environments_dir=tmp / "none",
        extra_environments=[clip],
        playback_speed=1.0,
        api_keys=f"viewer:{VIEWER},operator:{OPERATOR}",
        api_keys_file=keys_file,
        data_dir=tmp / "data",
    )
    with live_server(settings) as base:
        r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "clip"}, headers=auth(OPERATOR))
        assert r.status_code == 202
        yield base, r.json()["task_id"]


def test_rest_needs_a_key_and_the_right_role(server: tuple[str, str]) -> None:
    base, task = server
    reads = [
        "/api/v1/config/environments",
        "/api/v1/config/environments/clip/cameras",
        "/api/v1/processing-tasks",
        f"/api/v1/processing-tasks/{task}/status",
        "/api/v1/analytics_data/unique_people",
        "/metrics",
    ]
    for path in reads:
        assert httpx.get(base + path).status_code == 401, path
        assert httpx.get(base + path, headers=auth("wrong-key-0123456789")).status_code == 401, path
        assert httpx.get(base + path, headers=auth(VIEWER)).status_code == 200, path
    assert httpx.get(base + "/api/v1/config/environments").headers["www-authenticate"] == "Bearer"
    start = {"environment_id": "clip"}
    assert httpx.post(base + "/api/v1/processing-tasks/start", json=start).status_code == 401
    assert httpx.post(base + "/api/v1/processing-tasks/start", json=start, headers=auth(VIEWER)).status_code == 403
    assert httpx.post(f"{base}/api/v1/processing-tasks/{task}/stop", headers=auth(VIEWER)).status_code == 403
    assert httpx.get(f"{base}/api/v1/stream/{task}/c1").status_code == 401
    assert httpx.get(base + "/health").status_code == 200  # liveness stays open: no people or video in it


def test_a_scoped_key_sees_only_its_environments(server: tuple[str, str]) -> None:
    base, task = server
    h = auth(SCOPED)
    assert httpx.get(base + "/api/v1/config/environments", headers=h).json() == []
    assert httpx.get(base + "/api/v1/processing-tasks", headers=h).json() == []
    assert httpx.get(f"{base}/api/v1/processing-tasks/{task}/status", headers=h).status_code == 403
    assert httpx.get(base + "/api/v1/config/environments/clip/cameras", headers=h).status_code == 403
    assert (
        httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "clip"}, headers=h).status_code
        == 403
    )
    assert httpx.get(base + "/api/v1/analytics_data/unique_people", headers=h).status_code == 403
    assert httpx.get(base + "/metrics", headers=h).status_code == 403  # metrics span every environment


def test_websocket_auth_is_the_first_message_and_foreign_pages_are_refused(server: tuple[str, str]) -> None:
    base, task = server
    url = base.replace("http", "ws") + f"/ws/tracking/{task}"
    ok = json.dumps({"type": "auth", "token": VIEWER})
    assert asyncio.run(_ws(url, None)) == (4401, 0)  # says nothing: closed after the auth timeout, no frame sent
    assert asyncio.run(_ws(url, json.dumps({"type": "auth", "token": "nope-0123456789abcdef"}))) == (4401, 0)
    assert asyncio.run(_ws(url, "garbage")) == (4401, 0)
    assert asyncio.run(_ws(url, json.dumps({"type": "auth", "token": SCOPED}))) == (4403, 0)
    assert asyncio.run(_ws(url, ok)) == (None, 2)
    assert asyncio.run(_ws(url, ok, origin=base)) == (None, 2)  # the built-in viewer: same origin
    assert asyncio.run(_ws(url, ok, origin="http://evil.example")) == (403, 0)  # refused at the handshake


def test_signed_stream_urls_work_without_a_header_and_expire(server: tuple[str, str]) -> None:
    base, task = server
    r = httpx.post(f"{base}/api/v1/stream/{task}/c1/url", headers=auth(VIEWER))
    assert r.status_code == 200
    signed = r.json()["url"]
    assert "sig=" in signed and VIEWER not in signed
    with httpx.stream("GET", base + signed, timeout=30) as s:
        assert s.status_code == 200
        assert next(s.iter_bytes()).startswith(b"--frame")
    assert httpx.get(base + signed.replace("sig=", "sig=0")).status_code == 401
    assert httpx.get(base + signed.replace("/c1?", "/c2?")).status_code == 401  # signed for another camera
    assert httpx.post(f"{base}/api/v1/stream/{task}/c1/url").status_code == 401


def test_pages_carry_security_headers(server: tuple[str, str]) -> None:
    base, _ = server
    for path in ("/", "/health"):
        h = httpx.get(base + path).headers
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
        assert "default-src 'self'" in h["content-security-policy"]


def test_key_store_hashes_keys_and_refuses_bad_settings(tmp_path: Path) -> None:
    store = KeyStore.load(f"operator:{OPERATOR}", None, "s3cret")
    assert store.enabled and store.authenticate(OPERATOR).role is Role.operator  # type: ignore[union-attr]
    assert store.authenticate("x" * 20) is None and store.authenticate(None) is None
    assert OPERATOR not in repr(store.__dict__)  # only digests are kept
    off = KeyStore.load("", None, None)
    assert not off.enabled and off.authenticate(None).role is Role.admin  # type: ignore[union-attr]
    exp, sig = store.sign("/api/v1/stream/t/c", store.authenticate(OPERATOR))  # type: ignore[arg-type]
    assert store.verify("/api/v1/stream/t/c", exp, sig, "key1")
    assert not store.verify("/api/v1/stream/t/c", exp, sig, "key1", now=time.time() + 10_000)
    for bad in ("viewer", "boss:0123456789abcdef0", "viewer:short"):
        with pytest.raises(KeyConfigError):
            KeyStore.load(bad, None, None)
    broken = tmp_path / "k.json"
    for content in ("{", "{}", '[{"name": "x", "role": "viewer"}]', '[{"role": "x", "sha256": "' + "a" * 64 + '"}]'):
        broken.write_text(content)
        with pytest.raises(KeyConfigError):
            KeyStore.load("", broken, None)


def test_keys_add_prints_the_key_once_and_stores_its_hash(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "keys.json"
    assert (
        cli_main(["keys", "add", "--file", str(path), "--name", "wall", "--role", "viewer", "--environment", "campus"])
        == 0
    )
    key = capsys.readouterr().out.strip()
    stored = json.loads(path.read_text())
    assert stored == [{"name": "wall", "role": "viewer", "sha256": digest(key), "environments": ["campus"]}]
    assert key not in path.read_text()
    principal = KeyStore.load("", path, None).authenticate(key)
    assert principal is not None and principal.may_see("campus") and not principal.may_see("factory")
    assert cli_main(["keys", "add", "--file", str(path), "--name", "wall", "--role", "viewer"]) == 2


@pytest.mark.timeout(600)
def test_schemathesis_finds_no_failure_on_any_endpoint(tmp_path: Path) -> None:
    """Every endpoint answers only documented statuses with bodies matching its schema (schemathesis, all checks
    including stateful sequences, a bounded example count), against a real server with real models."""
    import subprocess
    import sys

    clip = make_clip(tmp_path, 14)
    settings = Settings(
        environments_dir=tmp_path / "none", extra_environments=[clip], playback_speed=0.0, data_dir=tmp_path / "data"
    )
    with live_server(settings) as base:
        run = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "run",
                f"{base}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "15",
                "--seed",
                "1",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=540,
        )
    tail = run.stdout[-4000:]
    assert run.returncode == 0, tail
    assert "passed" in tail and "failure" not in tail.split("SUMMARY")[-1], tail


def test_limits_answer_with_clear_statuses(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, 140)
    settings = Settings(
        environments_dir=tmp_path / "none",
        extra_environments=[clip],
        playback_speed=1.0,
        data_dir=tmp_path / "data",
        max_tasks_per_key=1,
        task_starts_per_minute=2,
        max_request_body_bytes=2048,
        ws_max_clients_per_task=1,
    )

    async def two_clients(url: str) -> int | None:
        """The second WebSocket client of a task that allows one."""
        async with (
            websockets.connect(url, compression=None, max_size=2**24),
            websockets.connect(url, compression=None, max_size=2**24) as second,
        ):
            try:
                async for _ in second:
                    pass
            except websockets.ConnectionClosed:
                pass
            return second.close_code

    with live_server(settings) as base:
        start = base + "/api/v1/processing-tasks/start"
        first = httpx.post(start, json={"environment_id": "clip"})
        assert first.status_code == 202
        task = first.json()["task_id"]
        assert asyncio.run(two_clients(base.replace("http", "ws") + f"/ws/tracking/{task}")) == 1013
        second = httpx.post(start, json={"environment_id": "clip"})
        assert second.status_code == 409 and "limit 1" in second.json()["detail"]
        httpx.post(f"{base}/api/v1/processing-tasks/{task}/stop")
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/api/v1/processing-tasks/{task}/status").json()["status"] != "STOPPED":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        limited = httpx.post(start, json={"environment_id": "clip"})  # the third start within a minute
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        huge = httpx.post(start, content=b"{" + b" " * 5000 + b"}", headers={"Content-Type": "application/json"})
        assert huge.status_code == 413 and "larger than 2048" in huge.json()["detail"]
