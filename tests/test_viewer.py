"""The built-in viewer in a real browser (Debian's Chromium driven by Playwright), and the MJPEG endpoint.

Chromium comes from the machine (`.ci/run` installs Debian's package when it is missing); Playwright's own
browser downloads are not used. Set ``SPOTON_UPDATE_SCREENSHOTS=1`` to refresh docs/viewer.png from this test.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from app.core.config import Settings
from app.utils.server import free_port
from tests.live_server import live_server
from tests.test_e2e import make_clip

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parent.parent / "docs"
N_FRAMES = 280  # 40 s of the 7 fps derived cameras: still running when the test stops it


def _browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run should have installed Debian's chromium")
        pytest.skip("Chromium is not installed (apt-get install -y chromium; .ci/run does)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from _browser()


BOX_PIXELS_JS = """
async ([cam, n]) => {
  // the box colours as this browser paints them (the viewer's own colourOf), ±2 per channel
  const { colourOf } = await import('/viewer/colours.js');
  const probe = document.createElement('canvas'); probe.width = n; probe.height = 1;
  const p = probe.getContext('2d');
  for (let i = 1; i <= n; i++) { p.fillStyle = colourOf(i); p.fillRect(i - 1, 0, 1, 1); }
  const ref = p.getImageData(0, 0, n, 1).data, wanted = new Set();
  for (let i = 0; i < n * 4; i += 4)
    for (let dr = -2; dr <= 2; dr++) for (let dg = -2; dg <= 2; dg++) for (let db = -2; db <= 2; db++)
      wanted.add(((ref[i] + dr) << 16) | ((ref[i + 1] + dg) << 8) | (ref[i + 2] + db));
  const c = document.querySelector(`[data-testid="camera-tile"][data-camera-id="${cam}"] canvas`);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let hits = 0;
  for (let i = 0; i < d.length; i += 4) if (wanted.has((d[i] << 16) | (d[i + 1] << 8) | d[i + 2])) hits++;
  return hits;
}
"""


def box_pixels(page: Any, camera_id: str) -> int:
    """Pixels of a camera tile's canvas that have exactly a box colour (natural pixels rarely do)."""
    return int(page.evaluate(BOX_PIXELS_JS, [camera_id, 200]))


def test_viewer_starts_a_task_shows_four_cameras_with_boxes_and_the_map_and_stops_it(
    browser: Any, tmp_path: Path
) -> None:
    clip = make_clip(tmp_path, N_FRAMES)
    settings = Settings(environments_dir=tmp_path / "none", extra_environments=[clip], playback_speed=1.0)
    with live_server(settings) as base:
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(base + "/")
        page.wait_for_selector('[data-testid="health"][data-state="healthy"]', timeout=60_000)
        page.select_option('[data-testid="env-select"]', "clip")
        page.click('[data-testid="start-task"]')
        page.wait_for_function(
            """() => { const t = [...document.querySelectorAll('[data-testid="camera-tile"]')];
                 return t.length === 4 && t.every((x) => Number(x.dataset.frames) >= 10); }""",
            timeout=120_000,
        )
        page.wait_for_function(
            """() => Number(document.querySelector('[data-testid="map"]').dataset.persons) > 0""", timeout=30_000
        )
        cams = page.eval_on_selector_all('[data-testid="camera-tile"]', "els => els.map((e) => e.dataset.cameraId)")
        assert sorted(cams) == ["c1", "c2", "c3", "c4"]
        assert max(box_pixels(page, c) for c in cams) > 100  # coloured boxes drawn into the tiles
        status = page.inner_text('[data-testid="status-bar"]')
        assert "fps" in status and "latency" in status
        page.screenshot(path=str(tmp_path / "viewer.png"))
        if os.environ.get("SPOTON_UPDATE_SCREENSHOTS") == "1":
            page.screenshot(path=str(DOCS / "viewer.png"))
        page.click('[data-testid="stop-task"]')
        page.wait_for_selector('[data-testid="connection"][data-state="ended"]', timeout=30_000)
        tasks = httpx.get(base + "/api/v1/processing-tasks").json()
        assert tasks and all(t["status"] in ("STOPPED", "COMPLETED") for t in tasks)
        assert not errors, errors


def test_mjpeg_stream_yields_decodable_jpegs_with_and_without_boxes(tmp_path: Path) -> None:
    # 20 s of video: enough frames for both streams even when a loaded machine makes the task skip many.
    clip = make_clip(tmp_path, 140)
    settings = Settings(environments_dir=tmp_path / "none", extra_environments=[clip], playback_speed=1.0)
    with live_server(settings) as base:
        task = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "clip"}).json()
        url = f"{base}/api/v1/stream/{task['task_id']}/c2"
        for params, want in (({}, 5), ({"overlay": "1"}, 3)):
            jpegs: list[np.ndarray] = []
            with httpx.stream("GET", url, params=params, timeout=60) as r:
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=frame")
                buf = b""
                deadline = time.monotonic() + 60
                for chunk in r.iter_bytes():
                    buf += chunk
                    while True:
                        start, end = buf.find(b"\xff\xd8"), buf.find(b"\xff\xd9")
                        if start < 0 or end < start:
                            break
                        image = cv2.imdecode(np.frombuffer(buf[start : end + 2], np.uint8), cv2.IMREAD_COLOR)
                        assert image is not None and image.shape[:2] == (480, 640)
                        jpegs.append(image)
                        buf = buf[end + 2 :]
                    if len(jpegs) >= want or time.monotonic() > deadline:
                        break
            assert len(jpegs) >= want, params
        assert httpx.get(f"{base}/api/v1/stream/{task['task_id']}/nope").status_code == 404
        assert httpx.get(f"{base}/api/v1/stream/no-such-task/c1").status_code == 404
        httpx.post(f"{base}/api/v1/processing-tasks/{task['task_id']}/stop")


def test_a_page_left_open_recovers_when_the_server_restarts(browser: Any, tmp_path: Path) -> None:
    clip = make_clip(tmp_path, 14)
    settings = Settings(environments_dir=tmp_path / "none", extra_environments=[clip], playback_speed=1.0)
    port = free_port()
    page = browser.new_page()
    with live_server(settings, port=port) as base:
        page.goto(base + "/")
        page.wait_for_selector('[data-testid="health"][data-state="healthy"]', timeout=60_000)
    page.wait_for_selector('[data-testid="health"][data-state="down"]', timeout=30_000)
    assert page.is_disabled('[data-testid="start-task"]')
    with live_server(settings, port=port):
        page.wait_for_selector('[data-testid="health"][data-state="healthy"]', timeout=60_000)
        page.wait_for_function(
            """() => document.querySelector('[data-testid="env-select"]').options.length === 1""", timeout=30_000
        )
        assert not page.is_disabled('[data-testid="start-task"]')


def test_the_viewer_asks_for_a_key_when_the_server_requires_one(browser: Any, tmp_path: Path) -> None:
    key = "operator-key-for-the-viewer-0123"
    clip = make_clip(tmp_path, 70)
    settings = Settings(environments_dir=tmp_path / "none", extra_environments=[clip], playback_speed=1.0,
                        api_keys=f"operator:{key}")
    with live_server(settings) as base:
        page = browser.new_page()
        asked: list[str] = []
        page.on("dialog", lambda d: (asked.append(d.message), d.accept(key)))
        page.goto(base + "/")
        page.wait_for_function(
            """() => document.querySelector('[data-testid="env-select"]').options.length === 1""", timeout=60_000
        )
        assert asked and "API key" in asked[0]
        page.select_option('[data-testid="env-select"]', "clip")
        page.click('[data-testid="start-task"]')
        page.wait_for_function(  # the WebSocket authenticated with its first message: frames arrive
            """() => { const t = [...document.querySelectorAll('[data-testid="camera-tile"]')];
                 return t.length === 4 && t.every((x) => Number(x.dataset.frames) >= 3); }""",
            timeout=120_000,
        )
        assert page.get_attribute('[data-testid="connection"]', "data-state") == "connected"
