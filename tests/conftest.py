from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
