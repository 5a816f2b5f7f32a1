"""The README's first command, `spoton demo`, as a user runs it: a subprocess, real output, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.utils.server import free_port
from tests.conftest import shared

pytestmark = pytest.mark.e2e


def demo_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SPOTON_DEMO_VIDEO=str(shared("pets2009-s2l1", "vtest.avi")),
        SPOTON_DATA_DIR=str(tmp_path / "data"),
        SPOTON_ENVIRONMENTS_DIR=str(tmp_path / "none"),
        SPOTON_PORT=str(free_port()),
        PYTHONUNBUFFERED="1",
    )
    return env


def test_demo_runs_a_task_to_completion_and_reports_progress(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--max-frames", "35"],
        env=demo_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "websocket: ws://" in out
    assert out.splitlines()[0].startswith("SpotOn viewer: http://")  # the viewer URL comes first
    assert re.search(r"viewer: +http://\S+/\?task=\w+", out), out
    assert re.search(r"task finished: COMPLETED — \d+ global frames processed, \d+ global ids, \d+ JPEGs", out), out
    processed = int(re.search(r"(\d+) global frames processed", out).group(1))  # type: ignore[union-attr]
    assert processed >= 1
    if processed >= 3:  # a rate needs a few frames; on a heavily loaded machine the clip may end first
        assert re.search(r"fps/camera c1:[\d.]+ c2:[\d.]+ c3:[\d.]+ c4:[\d.]+", out), out
    ids = int(re.search(r"(\d+) global ids,", out).group(1))  # type: ignore[union-attr]
    assert ids >= 1
    assert (tmp_path / "data" / "demo" / "environment" / "environment.json").is_file()


def test_ctrl_c_stops_the_task_and_exits_cleanly(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--max-frames", "400"],
        env=demo_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("[PROCESSING]"):
            proc.send_signal(signal.SIGINT)
            break
    else:
        proc.kill()
    rest, _ = proc.communicate(timeout=60)
    out = "".join(lines) + rest
    assert "interrupted: stopping the task" in out, out
    assert proc.returncode == 0, out
