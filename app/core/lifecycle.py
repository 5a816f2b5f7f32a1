"""Start-up and shut-down: models are loaded and warmed before the first task, off the event loop.

Loading runs in a worker thread while the server already answers, so ``/health`` can say ``starting``
(HTTP 503) until every essential component is ready — the contract a client's connection strategy polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from app.core.config import Settings
from app.models.base import AppearanceEmbedder, PersonDetector
from app.models.registry import build_detector, build_embedder
from app.services.environment_catalog import EnvironmentCatalog
from app.services.tracking import CameraTrackerFactory

log = logging.getLogger(__name__)


class ComponentState(StrEnum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"


@dataclass(slots=True)
class ComponentHealth:
    name: str
    essential: bool
    state: ComponentState = ComponentState.LOADING
    device: str | None = None
    detail: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def gpu_summary() -> dict[str, Any]:
    """Whether CUDA is usable, and its memory when it is."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {"available": False}
        i = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(i)
        return {
            "available": True,
            "name": torch.cuda.get_device_name(i),
            "memory_allocated_mb": round(torch.cuda.memory_allocated(i) / 2**20, 1),
            "memory_reserved_mb": round(torch.cuda.memory_reserved(i) / 2**20, 1),
            "memory_total_mb": round(total / 2**20, 1),
            "memory_free_mb": round(free / 2**20, 1),
            **_nvml_utilisation(i),
        }
    except Exception as exc:  # a broken driver must not break /health
        return {"available": False, "error": str(exc)}


def _nvml_utilisation(index: int) -> dict[str, Any]:
    """GPU and memory-controller utilisation (%) from NVML when nvidia-ml-py is installed; else nothing.
    The index is torch's, which matches NVML's unless CUDA_VISIBLE_DEVICES reorders devices."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            return {"utilization_gpu_percent": int(util.gpu), "utilization_memory_percent": int(util.memory)}
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVML missing from the driver, permissions, ...
        return {"utilization_error": str(exc)}


@runtime_checkable
class _ReportsDegradation(Protocol):
    """A model that can lose capacity at run time (Faster R-CNN on CUDA OOM) and says so."""

    on_degraded: Callable[[str], None] | None


class Components:
    """The loaded models and their health."""

    def __init__(self, settings: Settings, catalog: EnvironmentCatalog, run_models: bool = True) -> None:
        self.settings = settings
        self.catalog = catalog
        self.run_models = run_models
        """False on an API node of a cluster (``--role api``): workers run the models, this process none."""
        self.detector: PersonDetector | None = None
        self.embedder: AppearanceEmbedder | None = None
        self.tracker_factory: CameraTrackerFactory | None = None
        self.health: dict[str, ComponentHealth] = {
            "detector": ComponentHealth("detector", essential=True),
            "tracker_factory": ComponentHealth("tracker_factory", essential=True),
            "reid_embedder": ComponentHealth("reid_embedder", essential=True),
            "homography": ComponentHealth("homography", essential=False),
            "state_store": ComponentHealth("state_store", essential=False),
        }
        if not run_models:
            for name in ("detector", "tracker_factory", "reid_embedder"):
                del self.health[name]
        self._done = asyncio.Event()
        self.probes: dict[str, Callable[[ComponentHealth], None]] = {}
        """Components whose health changes at run time (stores) refresh it through these when it is read."""

    def _load(self, name: str, fn: Callable[[], Any]) -> None:
        h = self.health[name]
        t0 = time.perf_counter()
        try:
            fn()
            h.state = ComponentState.READY
            h.info["load_s"] = round(time.perf_counter() - t0, 2)
        except Exception as exc:
            h.state = ComponentState.FAILED
            h.detail = f"{type(exc).__name__}: {exc}"
            log.error("component %s failed to load: %s", name, h.detail)

    def load_all(self) -> None:
        """Blocking: build and warm every model. Run in a worker thread."""
        s = self.settings
        if s.torch_threads > 0:
            import torch

            torch.set_num_threads(s.torch_threads)

        def detector() -> None:
            h = self.health["detector"]
            det = build_detector(s)
            if isinstance(det, _ReportsDegradation):
                det.on_degraded = lambda reason: self._degrade("detector", reason)
            t0 = time.perf_counter()
            det.warmup()
            h.info["warmup_s"] = round(time.perf_counter() - t0, 2)
            self.detector = det
            h.device = det.info.device
            h.info.update(name=det.info.name, precision=det.info.precision, selected=s.detector)

        def embedder() -> None:
            emb = build_embedder(s)
            emb.warmup()
            self.embedder = emb
            self.health["reid_embedder"].device = emb.info.device
            self.health["reid_embedder"].info.update(
                name=emb.info.name, precision=emb.info.precision, dim=emb.dim
            )

        def trackers() -> None:
            self.tracker_factory = CameraTrackerFactory(s)
            self.tracker_factory.create("warmup", 10.0)
            self.health["tracker_factory"].device = "cpu"
            self.health["tracker_factory"].info["tracker"] = "botsort"

        def homography() -> None:
            h = self.health["homography"]
            h.device = "cpu"
            h.info.update(self.catalog.summary())
            if self.catalog.errors:
                h.detail = f"{len(self.catalog.errors)} environment file(s) failed to load"
                raise RuntimeError(h.detail + ": " + "; ".join(self.catalog.errors))

        def state_store() -> None:
            probe = self.probes.get("state_store")
            if probe is not None:
                probe(self.health["state_store"])
                return
            self.health["state_store"].device = "in-process"
            self.health["state_store"].info["backend"] = "memory"

        self._load("homography", homography)
        self._load("state_store", state_store)
        if not self.run_models:
            return
        self._load("tracker_factory", trackers)
        self._load("detector", detector)
        self._load("reid_embedder", embedder)

    async def load_in_background(self) -> None:
        try:
            await asyncio.to_thread(self.load_all)
        finally:
            self._done.set()

    async def wait_loaded(self) -> None:
        await self._done.wait()

    @property
    def loaded(self) -> bool:
        return self._done.is_set()

    def essentials_ready(self) -> bool:
        return all(h.state is ComponentState.READY for h in self.health.values() if h.essential)

    def refresh(self) -> None:
        """Let the run-time probes update their components' health (loaded components only)."""
        for name, probe in self.probes.items():
            h = self.health.get(name)
            if h is not None and h.state is ComponentState.READY:
                probe(h)

    def overall(self) -> str:
        """``starting`` while loading; ``unhealthy`` when an essential failed; else healthy/degraded."""
        self.refresh()
        hs = self.health.values()
        if any(h.essential and h.state is ComponentState.FAILED for h in hs):
            return "unhealthy"
        if any(h.essential and h.state is ComponentState.LOADING for h in hs):
            return "starting"
        if any(h.state is not ComponentState.READY or h.info.get("degraded") for h in hs):
            return "degraded"
        return "healthy"

    def _degrade(self, name: str, reason: str) -> None:
        """A component that keeps working at reduced capacity (e.g. a smaller batch after CUDA OOM)."""
        h = self.health[name]
        h.info["degraded"] = reason
        h.detail = reason
