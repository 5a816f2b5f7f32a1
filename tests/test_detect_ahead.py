"""Detecting the next global frame while the current one is tracked must not change what anyone receives."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.services.frame_processor import FrameProcessor
from tests.live_server import live_server
from tests.test_e2e import collect, make_clip

pytestmark = pytest.mark.e2e
N_FRAMES = 21


def run_task(clip: Path, **settings: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    s = Settings(environments_dir=clip / "none", extra_environments=[clip], **settings)
    with live_server(s) as base:
        started = httpx.post(base + "/api/v1/processing-tasks/start", json={"environment_id": "clip"}).json()
        _, messages, _ = asyncio.run(collect(started["websocket_url"]))
        status = httpx.get(started["status_url"]).json()
    updates = [m for m in messages if m["type"] == "tracking_update"]
    return updates, status


def tracks_of(updates: list[dict[str, Any]]) -> list[Any]:
    return [
        (u["global_frame_index"], cid, [(t["track_id"], t["global_id"], t["bbox_xyxy"]) for t in cam["tracks"]])
        for u in updates
        for cid, cam in sorted(u["cameras"].items())
    ]


def overlaps(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, float, float]]:
    """Record (kind, frame, start, end) of every detect and complete call."""
    calls: list[tuple[str, int, float, float]] = []
    for kind in ("detect", "complete"):
        original = getattr(FrameProcessor, kind)

        def timed(self: FrameProcessor, gf: Any, *rest: Any, _kind: str = kind, _f: Any = original) -> Any:
            t0 = time.monotonic()
            try:
                return _f(self, gf, *rest)
            finally:
                calls.append((_kind, gf.index, t0, time.monotonic()))

        monkeypatch.setattr(FrameProcessor, kind, timed)
    return calls


def detections_during_completion(calls: list[tuple[str, int, float, float]]) -> int:
    """How many frames were detected (in part) while the previous frame was being completed."""
    done = {i: (a, b) for k, i, a, b in calls if k == "complete"}

    def during_previous(i: int, a: float, b: float) -> bool:
        start, end = done.get(i - 1, (0.0, 0.0))
        return a < end and b > start

    return sum(1 for k, i, a, b in calls if k == "detect" and during_previous(i, a, b))


def test_detecting_ahead_gives_the_same_tracks_and_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clip = make_clip(tmp_path, N_FRAMES)
    calls = overlaps(monkeypatch)
    ahead, status_ahead = run_task(clip, playback_speed=0.0)  # auto: on when unpaced
    overlapped = detections_during_completion(calls)
    calls.clear()
    serial, status_serial = run_task(clip, playback_speed=0.0, detect_ahead="off")
    assert overlapped >= N_FRAMES // 2 and detections_during_completion(calls) == 0
    assert status_ahead["status"] == status_serial["status"] == "COMPLETED"
    assert status_ahead["frames_processed"] == status_serial["frames_processed"] == N_FRAMES
    assert len(ahead) == N_FRAMES and sum(len(t[2]) for t in tracks_of(ahead)) > 50
    assert tracks_of(ahead) == tracks_of(serial)


def test_played_as_live_no_frame_is_detected_before_its_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking ahead must not read the future: each frame's detection starts no earlier than a live camera would
    have delivered it (its moment: the playback start plus its timestamp), and frames stay in order."""
    from app.services.pipeline_orchestrator import PipelineOrchestrator

    started: dict[int, float] = {}
    due_of: dict[int, float | None] = {}
    original = FrameProcessor.detect
    original_when_due = PipelineOrchestrator._detect_when_due

    def detect(self: FrameProcessor, gf: Any) -> Any:
        started[gf.index] = time.monotonic()
        return original(self, gf)

    def when_due(self: PipelineOrchestrator, processor: FrameProcessor, gf: Any, due: float | None) -> Any:
        due_of[gf.index] = due
        return original_when_due(self, processor, gf, due)

    monkeypatch.setattr(FrameProcessor, "detect", detect)
    monkeypatch.setattr(PipelineOrchestrator, "_detect_when_due", when_due)
    clip = make_clip(tmp_path, N_FRAMES)
    _, status = run_task(clip, playback_speed=1.0, detect_ahead="on")
    assert status["status"] == "COMPLETED"
    indices = list(started)
    # (frames the machine could not keep up with are skipped, never detected early)
    assert indices == sorted(indices) and len(indices) == status["frames_processed"] >= 3
    first = indices[0]
    start = due_of[first]
    assert start is not None
    for index in indices:
        due = due_of[index]
        assert due is not None and abs(due - (start + (index - first) / 7.0)) < 1e-6  # 7 fps played at 1x
        assert started[index] >= due, (index, started[index] - due)
