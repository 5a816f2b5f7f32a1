"""The original SpotOn frontend's contract (JubJones/spoton_frontend, read from its source; docs/frontend-compat.md):
REST shims, CORS, the legacy per-camera WebSocket, 16:9 MJPEG under its camera ids, and a page doing what the
frontend does from another origin in a real Chromium."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import websockets
from fastapi.testclient import TestClient

from app.api.compat.aliases import AliasError, AliasTable, Letterbox
from app.core.config import Settings
from app.main import create_app
from app.services.environment_catalog import EnvironmentCatalog
from app.utils.server import free_port
from tests.conftest import shared
from tests.live_server import live_server
from tests.test_e2e import make_clip

FRONTEND = "http://localhost:5173"
CAMPUS = ["c01", "c02", "c03", "c05"]
TASKS = "/api/v1/detection-processing-tasks"


def compat_settings(tmp: Path, envs: list[Path], **kw: Any) -> Settings:
    return Settings(
        environments_dir=tmp / "none",
        extra_environments=envs,
        frontend_compat=True,
        cors_origins=FRONTEND,
        data_dir=tmp / "data",
        **kw,
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    tmp = tmp_path_factory.mktemp("compat")
    with TestClient(create_app(compat_settings(tmp, [shared("multiview-dev")]))) as c:
        deadline = time.monotonic() + 120
        while c.get("/health").json()["status"] != "healthy" and time.monotonic() < deadline:
            time.sleep(0.5)
        yield c


def test_health_and_environments_have_the_frontend_s_shapes(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "healthy"  # the frontend enables Start only on this
    body = client.get(f"{TASKS}/environments", headers={"Content-Type": "application/json"}).json()
    (campus,) = body["data"]["environments"]
    assert body["environments"] == body["data"]["environments"]
    assert campus["environment_id"] == "campus" and campus["cameras"] == CAMPUS
    assert campus["display_name"] == "Campus"
    assert set(campus["camera_metadata"]) == set(CAMPUS)
    assert all(isinstance(m["display_name"], str) and m["display_name"] for m in campus["camera_metadata"].values())


def test_cors_preflight_is_answered_for_the_allowed_origin_only(client: TestClient) -> None:
    pre = {"Origin": FRONTEND, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "content-type"}
    r = client.options(f"{TASKS}/environments", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == FRONTEND
    assert "content-type" in r.headers["access-control-allow-headers"].lower()
    r = client.get("/health", headers={"Origin": FRONTEND})
    assert r.headers["access-control-allow-origin"] == FRONTEND
    r = client.options(f"{TASKS}/environments", headers={**pre, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_start_status_list_controls_and_cleanup(client: TestClient) -> None:
    r = client.post(f"{TASKS}/start", json={"environment_id": "campus", "debug": False, "render_debug_overlay": False})
    assert r.status_code == 202
    task_id = r.json()["task_id"]
    st = client.get(f"{TASKS}/{task_id}/status").json()
    assert st["status"] in ("QUEUED", "INITIALIZING", "PROCESSING") and isinstance(st["details"], str)
    tasks = client.get(TASKS).json()["data"]["tasks"]
    assert {"task_id": task_id, "environment_id": "campus"}.items() <= next(
        t for t in tasks if t["task_id"] == task_id
    ).items()
    controls = client.get(f"/api/v1/controls/{task_id}/status").json()
    assert {"state", "last_frame_index", "total_frames"} <= set(controls)
    msg = client.delete(f"{TASKS}/environment/campus/cleanup").json()["data"]["message"]
    assert "stopped 1 task" in msg
    deadline = time.monotonic() + 30
    while client.get(f"{TASKS}/{task_id}/status").json()["status"] != "STOPPED" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.get(f"{TASKS}/{task_id}/status").json()["status"] == "STOPPED"
    assert client.post(f"{TASKS}/start", json={"environment_id": "factory"}).status_code == 404
    assert client.get(f"{TASKS}/nope/status").status_code == 404


def test_the_adapter_is_off_unless_asked_for(tmp_path: Path) -> None:
    settings = Settings(environments_dir=tmp_path / "none", extra_environments=[shared("multiview-dev")])
    with TestClient(create_app(settings)) as c:
        assert c.get(f"{TASKS}/environments").status_code == 404
        r = c.options("/health", headers={"Origin": FRONTEND, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in r.headers


def test_alias_table_defaults_and_checks() -> None:
    catalog = EnvironmentCatalog.from_paths(Path("/nonexistent"), [shared("multiview-dev"), shared("multiview-val")])
    table = AliasTable.build("", catalog)
    assert table.get("campus").cameras == dict(zip(CAMPUS, ["c1", "c2", "c3", "c4"], strict=True))  # type: ignore[union-attr]
    assert table.get("factory").environment_id == "pets-derived-val"  # type: ignore[union-attr]
    custom = AliasTable.build('{"factory": {"environment_id": "pets-derived", "cameras": {"c09": "c4"}}}', catalog)
    assert custom.get("campus") is None and custom.get("factory").ours("c09") == "c4"  # type: ignore[union-attr]
    for bad in (
        "{",
        "[]",
        '{"campus": {}}',
        '{"campus": {"environment_id": "ghost"}}',
        '{"campus": {"environment_id": "pets-derived", "cameras": {"c01": "c9"}}}',
    ):
        with pytest.raises(AliasError):
            AliasTable.build(bad, catalog)


def test_letterbox_puts_4_3_frames_in_16_9_and_scales_boxes_to_1080p() -> None:
    lb = Letterbox(640, 480)
    assert lb.needed and lb.canvas == (853, 480)
    assert lb.box([0, 0, 640, 480]) == pytest.approx([240.0, 0.0, 1680.0, 1080.0], abs=1.5)
    assert not Letterbox(1920, 1080).needed and Letterbox(1920, 1080).box([10, 20, 30, 40]) == [10, 20, 30, 40]


async def _legacy_messages(url: str) -> tuple[list[Any], int | None]:
    got: list[Any] = []
    async with websockets.connect(url, compression=None, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "subscribe_tracking"}))
        try:
            async for msg in ws:
                got.append(msg)
        except websockets.ConnectionClosed:
            pass
        return got, ws.close_code


def test_legacy_websocket_sends_per_camera_json_and_mjpeg_is_16_9(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, 21)
    with live_server(compat_settings(tmp_path, [clip], playback_speed=0.0)) as base:
        task_id = httpx.post(base + f"{TASKS}/start", json={"environment_id": "campus"}).json()["task_id"]
        # MJPEG under the frontend's camera id: letterboxed to 16:9 (640x480 -> 853x480)
        with httpx.stream("GET", f"{base}/api/v1/stream/{task_id}/c02?t=1", timeout=30) as r:
            assert r.status_code == 200
            buf = b""
            for chunk in r.iter_bytes():
                buf += chunk
                start, end = buf.find(b"\xff\xd8"), buf.find(b"\xff\xd9")
                if 0 <= start < end:
                    image = cv2.imdecode(np.frombuffer(buf[start : end + 2], np.uint8), cv2.IMREAD_COLOR)
                    break
        assert image.shape[:2] == (480, 853)
        assert image[:, :100].max() <= 16  # black bars
        messages, code = asyncio.run(_legacy_messages(base.replace("http", "ws") + f"/ws/tracking/{task_id}?tab_id=t1"))
    assert code == 1000 and messages
    assert all(isinstance(m, str) for m in messages)  # no binary frames for the frontend
    updates = [json.loads(m) for m in messages]
    updates = [u for u in updates if u["type"] == "tracking_update"]
    assert updates and all(u["mode"] == "detection_streaming" for u in updates)
    per_cam: dict[str, list[int]] = defaultdict(list)
    boxes = 0
    for u in updates:
        assert u["camera_id"] in CAMPUS and u["task_id"] == task_id
        per_cam[u["camera_id"]].append(u["global_frame_index"])
        assert isinstance(u["future_pipeline_data"]["mapping_coordinates"], list)
        assert u["timestamp_processed_utc"]
        tracks, dets = u["camera_data"]["tracks"], u["detection_data"]["detections"]
        assert len(tracks) == len(dets)
        for t, d in zip(tracks, dets, strict=True):
            x1, y1, x2, y2 = t["bbox_xyxy"]
            assert 239 <= x1 < x2 <= 1681 and 0 <= y1 < y2 <= 1080  # inside the 4:3 picture of the 16:9 frame
            assert d["bbox"]["x1"] == x1 and d["bbox"]["width"] == pytest.approx(x2 - x1, abs=0.11)
            assert d["global_id"] == t["global_id"] and d["class_name"] == "person"
            boxes += 1
        for m in u["future_pipeline_data"]["mapping_coordinates"]:
            assert {"detection_id", "map_x", "map_y", "projection_successful", "coordinate_system", "trail"} <= set(m)
    assert boxes > 0 and set(per_cam) == set(CAMPUS)
    for frames in per_cam.values():  # consecutive per camera, no gaps
        assert frames == list(range(frames[0], frames[0] + len(frames)))


PAGE = """<!doctype html><meta charset="utf-8"><body>
<img id="cam" crossorigin="anonymous">
<script>
window.result = {status: null, updates: {}, error: null};
(async () => {
  const base = "%(base)s", json = {"Content-Type": "application/json"};
  try {
    const h = await (await fetch(base + "/health", {headers: json})).json();
    const envs = await (await fetch(base + "/api/v1/detection-processing-tasks/environments", {headers: json})).json();
    const env = envs.data.environments[0];
    const task = await (await fetch(base + "/api/v1/detection-processing-tasks/start", {method: "POST",
      headers: json, body: JSON.stringify({environment_id: env.environment_id, debug: false,
      render_debug_overlay: false})})).json();
    for (let i = 0; i < 30; i++) {
      const st = await (await fetch(base + `/api/v1/detection-processing-tasks/${task.task_id}/status`,
                                    {headers: json})).json();
      window.result.status = st.status;
      if (st.status === "PROCESSING") break;
      await new Promise((r) => setTimeout(r, 500));
    }
    document.getElementById("cam").src = base + `/api/v1/stream/${task.task_id}/${env.cameras[0]}?t=1`;
    const ws = new WebSocket(base.replace("http", "ws") + `/ws/tracking/${task.task_id}?tab_id=page`);
    ws.onopen = () => ws.send(JSON.stringify({type: "subscribe_tracking"}));
    ws.onmessage = (ev) => { const m = JSON.parse(ev.data);
      if (m.type === "tracking_update" && m.mode === "detection_streaming")
        window.result.updates[m.camera_id] = (window.result.updates[m.camera_id] || 0) + 1; };
  } catch (e) { window.result.error = String(e); }
})();
</script>"""


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_page_doing_what_the_frontend_does_from_another_origin_shows_frames_and_updates(tmp_path: Path) -> None:
    from tests.test_viewer import _browser

    clip = make_clip(tmp_path, 140)
    api_port, page_port = free_port(), free_port()
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(PAGE % {"base": f"http://127.0.0.1:{api_port}"})
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", page_port), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{page_port}"
    settings = compat_settings(tmp_path, [clip], playback_speed=1.0).model_copy(update={"cors_origins": origin})
    gen = _browser()
    browser = next(gen)
    try:
        with live_server(settings, port=api_port):
            page = browser.new_page()
            page.goto(origin + "/index.html")
            page.wait_for_function(
                """() => Object.keys(window.result.updates).length === 4 &&
                         Object.values(window.result.updates).every((n) => n >= 5)""",
                timeout=120_000,
            )
            page.wait_for_function("() => document.getElementById('cam').naturalWidth > 0", timeout=60_000)
            assert page.evaluate("() => document.getElementById('cam').naturalWidth") == 853
            assert page.evaluate("() => window.result.error") is None
            assert sorted(page.evaluate("() => Object.keys(window.result.updates)")) == CAMPUS
    finally:
        httpd.shutdown()
        gen.close()


def test_focus_socket_ignores_garbage_and_answers_focus_and_ping(tmp_path: Path) -> None:
    with TestClient(create_app(compat_settings(tmp_path, [shared("multiview-dev")]))) as c, c.websocket_connect(
        "/ws/focus/some-task"
    ) as ws:
        ws.send_bytes(b"\x00\xff" * 100)
        ws.send_text("{not json")
        ws.send_text("[1, 2]")
        ws.send_text(json.dumps({"type": "unknown"}))
        ws.send_text(json.dumps({"type": "set_focus", "global_person_id": 7}))
        assert ws.receive_json() == {"type": "focus_update", "task_id": "some-task", "focused_person_id": 7}
        ws.send_text(json.dumps({"type": "ping"}))
        assert ws.receive_json() == {"type": "pong", "task_id": "some-task"}
