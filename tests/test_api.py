"""REST behaviour that needs no finished model loading: validation, 404s, listings, health shape."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from tests.conftest import shared


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    envs = tmp_path_factory.mktemp("envs")
    (envs / "broken.json").write_text('{"id": "broken"}')
    settings = Settings(environments_dir=envs, extra_environments=[shared("multiview-dev")], data_dir=Path("var"))
    with TestClient(create_app(settings)) as c:
        yield c


def test_environments_and_cameras(client: TestClient) -> None:
    r = client.get("/api/v1/config/environments")
    assert r.status_code == 200
    (env,) = r.json()
    assert env["id"] == "pets-derived"
    assert env["camera_ids"] == ["c1", "c2", "c3", "c4"]
    assert env["map_pixels_per_meter"] == 20.0
    assert ["c1", "c2"] in env["overlaps"]
    r = client.get("/api/v1/config/environments/pets-derived/cameras")
    assert r.status_code == 200
    cams = r.json()
    assert [c["id"] for c in cams] == ["c1", "c2", "c3", "c4"]
    assert len(cams[0]["image_to_map_homography"]) == 3


def test_unknown_ids_are_404_with_a_message(client: TestClient) -> None:
    r = client.get("/api/v1/config/environments/nope/cameras")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = client.get("/api/v1/processing-tasks/abc/status")
    assert r.status_code == 404 and "abc" in r.json()["detail"]
    r = client.post("/api/v1/processing-tasks/abc/stop")
    assert r.status_code == 404
    r = client.post("/api/v1/processing-tasks/start", json={"environment_id": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [{}, {"environment_id": ""}, {"environment_id": 5, "x": 1}, {"environment_id": "pets-derived", "camera_ids": []}],
)
def test_bad_bodies_are_422(client: TestClient, body: dict[str, object]) -> None:
    r = client.post("/api/v1/processing-tasks/start", json=body)
    assert r.status_code == 422


def test_unknown_camera_is_404_and_creates_no_task(client: TestClient) -> None:
    before = len(client.get("/api/v1/processing-tasks").json())
    r = client.post("/api/v1/processing-tasks/start", json={"environment_id": "pets-derived", "camera_ids": ["c9"]})
    assert r.status_code == 404 and "c9" in r.json()["detail"]  # a camera it does not have, like an unknown environment
    assert len(client.get("/api/v1/processing-tasks").json()) == before


def test_health_reports_each_component(client: TestClient) -> None:
    r = client.get("/health")
    body = r.json()
    assert set(body["components"]) >= {"detector", "tracker_factory", "reid_embedder", "homography", "state_store"}
    assert body["status"] in ("starting", "healthy", "degraded")
    assert r.status_code == (503 if body["status"] == "starting" else 200)
    # the broken environment file is reported, not fatal
    homography = body["components"]["homography"]
    assert homography["state"] in ("failed", "loading")


def test_unknown_task_websocket_closes_with_4404(client: TestClient) -> None:
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect) as exc, client.websocket_connect("/ws/tracking/nope") as ws:
        ws.receive_text()
    assert exc.value.code == 4404


def test_viewer_page_map_picture_and_camera_footprints(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'data-testid="camera-grid"' in page.text
    script = client.get("/viewer/viewer.js").headers["content-type"]
    assert script.startswith(("text/javascript", "application/javascript"))
    (env,) = client.get("/api/v1/config/environments").json()
    assert env["map_image_url"] == "/api/v1/config/environments/pets-derived/map"
    picture = client.get(env["map_image_url"])
    assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"
    assert client.get("/api/v1/config/environments/nope/map").status_code == 404
    x0, y0 = env["map_origin_m"]
    x1, y1 = x0 + env["map_width_m"], y0 + env["map_height_m"]
    for cam in client.get("/api/v1/config/environments/pets-derived/cameras").json():
        poly = cam["footprint_m"]
        assert len(poly) >= 3, cam["id"]
        assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in poly)
        xs, ys = [p[0] for p in poly], [p[1] for p in poly]
        area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(poly))))
        assert area > 10.0, cam["id"]  # square metres of ground in view
