"""The motion gate: detection is skipped only while a camera's picture stays the same, and never for long."""

from __future__ import annotations

import numpy as np
import pytest

from app.core.config import Settings
from app.services.motion_gate import MotionGate


def _frame(x: int | None = None) -> np.ndarray:
    img = np.full((480, 640, 3), 90, np.uint8)
    img[::40, :] = 30  # a static texture
    if x is not None:
        img[200:330, x : x + 40] = 220  # a person-sized bright block
    return img


def test_unchanged_frames_skip_detection_until_max_skip() -> None:
    gate = MotionGate(max_skip=3)
    assert gate.needs_detection("c1", _frame())  # first frame of a camera: always
    assert [gate.needs_detection("c1", _frame()) for _ in range(5)] == [False, False, False, True, False]
    assert gate.skipped == 4 and gate.checked == 6


def test_a_walking_person_triggers_detection_even_slowly() -> None:
    gate = MotionGate(max_skip=100)
    gate.needs_detection("c1", _frame(100))
    moved = [gate.needs_detection("c1", _frame(100 + step)) for step in (1, 2, 3, 8, 16)]
    # differences add up against the last detected frame: a few pixels are not enough, a step is
    assert moved[-1] and moved.index(True) <= 3


def test_cameras_are_independent_and_noise_does_not_trigger() -> None:
    gate = MotionGate()
    rng = np.random.default_rng(0)
    for cam in ("c1", "c2"):
        gate.needs_detection(cam, _frame())
    noisy = np.clip(_frame().astype(int) + rng.integers(-4, 5, (480, 640, 3)), 0, 255).astype(np.uint8)
    assert not gate.needs_detection("c1", noisy)  # sensor noise below pixel_delta
    assert gate.needs_detection("c2", _frame(300))


def test_settings_turn_it_on_and_check_values() -> None:
    assert MotionGate.from_settings(Settings()) is None  # off by default
    gate = MotionGate.from_settings(Settings(motion_gate=True, motion_gate_max_skip=2))
    assert gate is not None and gate.max_skip == 2
    with pytest.raises(ValueError, match="motion gate"):
        MotionGate(min_changed=1.5)
