"""A worker asks for a task only with a free slot and, on a GPU, the memory one more task needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.core.config import Settings
from app.core.lifecycle import Components
from app.services.cluster import worker as worker_module
from app.services.cluster.worker import ClusterWorker, default_worker_id
from app.services.environment_catalog import EnvironmentCatalog
from app.services.notifications import NotificationHub
from app.stores.memory_live_state import InProcessLiveState


def make_worker(tmp_path: Path, slots: int) -> ClusterWorker:
    settings = Settings(
        nats_url="nats://127.0.0.1:4222", redis_url="redis://127.0.0.1:6379/0", worker_slots=slots,
        environments_dir=tmp_path / "none", data_dir=tmp_path / "var",
    )  # fmt: skip
    catalog = EnvironmentCatalog.from_paths(settings.environments_dir, [])
    live = InProcessLiveState()
    return ClusterWorker(settings, catalog, Components(settings, catalog), NotificationHub(8, live=live), live)


def test_room_means_a_free_slot_and_enough_free_gpu_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_worker(tmp_path, slots=2)
    assert not w.has_room()  # models not ready yet: not accepting
    w.accepting = True
    assert w.has_room()
    w.runs = {"a": object(), "b": object()}  # type: ignore[dict-item]
    assert not w.has_room()  # both slots busy
    w.runs = {"a": object()}  # type: ignore[dict-item]
    w.task_gpu_mb = 3000.0
    gpu: dict[str, Any] = {"available": True, "memory_free_mb": 2500.0}
    monkeypatch.setattr(worker_module, "gpu_summary", lambda: gpu)
    assert not w.has_room()  # a slot, but not the memory for one more task
    gpu["memory_free_mb"] = 3500.0
    assert w.has_room()
    gpu["available"] = False
    assert not w.has_room()  # the GPU went away


def test_worker_ids_default_to_host_and_pid(tmp_path: Path) -> None:
    assert default_worker_id().endswith(f"-{__import__('os').getpid()}")
    assert make_worker(tmp_path, 1).id == default_worker_id()
