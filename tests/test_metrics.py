"""``GET /metrics`` on a real server running a real task: Prometheus text that a scraper can parse, with the
figures the issue asks for (frames per task and camera, stage and latency histograms, WebSocket clients, history,
live state), and bounded memory for ended tasks."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import Settings
from tests.live_server import live_server
from tests.test_e2e import make_clip
from tests.ws_support import watch


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def test_metrics_expose_pipeline_websocket_history_and_live_state_figures(tmp_path: Path) -> None:
    clip = make_clip(tmp_path, 60)
    settings = Settings(
        environments_dir=tmp_path / "none",
        extra_environments=[clip],
        playback_speed=1.0,
        data_dir=tmp_path / "data",
    )
    with live_server(settings) as base:
        r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "clip"})
        assert r.status_code == 202
        task = r.json()["task_id"]
        ws_url = base.replace("http://", "ws://") + f"/ws/tracking/{task}"
        asyncio.run(asyncio.wait_for(watch(ws_url, 12), timeout=120))
        r = httpx.get(base + "/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        m = _samples(r.text)

        processed = {s[0]["camera"]: s[1] for s in m["spoton_frames_processed_total"] if s[0]["task_id"] == task}
        assert set(processed) == {"c1", "c2", "c3", "c4"}
        assert all(v > 0 for v in processed.values())
        assert {s[0]["camera"] for s in m["spoton_frames_skipped_total"] if s[0]["task_id"] == task} == set(processed)
        stages = {s[0]["stage"]: s[1] for s in m["spoton_stage_seconds_count"]}
        assert {"detect", "track", "encode"} <= set(stages) and min(stages.values()) > 0
        assert m["spoton_frame_publish_latency_seconds_count"][0][1] > 0
        assert sum(v for _, v in m["spoton_frame_send_latency_seconds_count"]) > 0
        assert {"frame", "message"} == {s[0]["kind"] for s in m["spoton_websocket_dropped_total"]}
        ready = {s[0]["component"]: s[1] for s in m["spoton_component_ready"]}
        assert ready["detector"] == 1.0
        assert any(s[0]["outcome"] == "published" and s[1] > 0 for s in m["spoton_live_state_messages_total"])
        assert "spoton_event_loop_lag_seconds" in m

        # Every series the Grafana dashboard plots exists (GPU ones only with a GPU).
        dashboard = (Path(__file__).parents[1] / "docs" / "grafana" / "spoton-dashboard.json").read_text()
        plotted = set(re.findall(r"spoton_[a-z0-9_]+", dashboard))
        assert plotted and {n for n in plotted if not n.startswith("spoton_gpu")} <= set(m), plotted - set(m)

        # History counts what the task produced once the recorder has flushed.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            history = {
                s[0]["outcome"]: s[1]
                for s in _samples(httpx.get(base + "/metrics").text)["spoton_history_records_total"]
            }
            if history["written"] > 0:
                break
            time.sleep(0.5)
        assert history["produced"] >= history["written"] > 0
        assert history["dropped"] == 0

        httpx.post(f"{base}/api/v1/processing-tasks/{task}/stop")


def test_metrics_need_an_unscoped_key_when_auth_is_on(tmp_path: Path) -> None:
    viewer = "viewer-key-0123456789abcdef"
    settings = Settings(environments_dir=tmp_path / "none", api_keys=f"viewer:{viewer}", data_dir=tmp_path / "d")
    with live_server(settings) as base:
        assert httpx.get(base + "/metrics").status_code == 401
        r = httpx.get(base + "/metrics", headers={"Authorization": f"Bearer {viewer}"})
        assert r.status_code == 200 and "spoton_tasks" in r.text


def test_ended_tasks_are_forgotten_beyond_the_limit_and_leave_the_metrics(tmp_path: Path) -> None:
    env = {
        "id": "gone",
        "map": {"width_px": 100, "height_px": 100, "pixels_per_meter": 10},
        "cameras": [
            {"id": "c1", "video": str(tmp_path / "missing.mp4"), "image_to_map_homography": np.eye(3).tolist()}
        ],
    }
    (tmp_path / "gone.json").write_text(json.dumps(env))
    settings = Settings(
        environments_dir=tmp_path / "none",
        extra_environments=[tmp_path / "gone.json"],
        finished_tasks_kept=1,
        data_dir=tmp_path / "data",
    )
    with live_server(settings) as base:
        ids = []
        for _ in range(3):
            r = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "gone"})
            ids.append(r.json()["task_id"])
            deadline = time.monotonic() + 30
            while httpx.get(f"{base}/api/v1/processing-tasks/{ids[-1]}/status").json()["status"] != "FAILED":
                assert time.monotonic() < deadline
                time.sleep(0.1)
        listed = [t["task_id"] for t in httpx.get(base + "/api/v1/processing-tasks").json()]
        assert listed == ids[-1:]
        # Its last status is still answered from the live-state store's snapshot (kept for SPOTON_LIVE_STATE_TTL_S).
        assert httpx.get(f"{base}/api/v1/processing-tasks/{ids[0]}/status").json()["status"] == "FAILED"
        tasks = {s[0]["status"]: s[1] for s in _samples(httpx.get(base + "/metrics").text)["spoton_tasks"]}
        assert tasks == {"FAILED": 1.0}
