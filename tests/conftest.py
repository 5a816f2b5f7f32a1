from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

if TYPE_CHECKING:
    from app.models.nanodet import NanoDetDetector

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def read_frames(video: Path, numbers: Iterable[int]) -> list[np.ndarray]:
    """The frames with these 1-based numbers (as in MOT files) of a video, in that order; a frame the file does
    not have fails the test."""
    wanted = sorted(set(numbers))
    cap = cv2.VideoCapture(str(video))
    frames: dict[int, np.ndarray] = {}
    try:
        for number in range(1, wanted[-1] + 1):
            ok, frame = cap.read()
            assert ok, f"{video}: cannot read frame {number}"
            if number in wanted:
                frames[number] = frame
    finally:
        cap.release()
    return [frames[n] for n in numbers]


def shared(*parts: str) -> Path:
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not found: {p}")
    return p


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a server the test needs is not listening — except in CI (``CI`` set), where it must be."""
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return
    except OSError as exc:
        message = f"{name} not reachable at {host}:{port}: {exc}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI must run this test: .ci/run starts the service)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def nanodet() -> NanoDetDetector:
    """The shipped NanoDet detector, loaded once for the session (skips where the model file is missing)."""
    from app.models.nanodet import DEFAULT_MODEL_PATH, NanoDetDetector

    if not DEFAULT_MODEL_PATH.is_file():
        pytest.skip("app/assets/nanodet.onnx missing")
    return NanoDetDetector()
