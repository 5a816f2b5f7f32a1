"""Which parts a process runs: the single-process server, an API node, a worker, or both against NATS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from app.core.config import Settings
from app.core.lifecycle import ComponentHealth, Components, ComponentState

if TYPE_CHECKING:
    from app.services.cluster.task_board import TaskBoard
    from app.stores.live_state import LiveStateStore

Role = Literal["single", "api", "worker", "all"]


def effective_role(settings: Settings) -> Role:
    """``single`` without NATS (API and tasks in one process, today's default); with ``SPOTON_NATS_URL``
    the configured role, ``all`` when none is."""
    if not settings.nats_url:
        if settings.role in ("api", "worker"):
            raise ValueError(f"role '{settings.role}' needs SPOTON_NATS_URL (the task queue it shares)")
        return "single"
    return settings.role or "all"


async def start_board(settings: Settings, live: LiveStateStore, components: Components) -> TaskBoard:
    """Connect the API to the cluster's queue, reported as the essential ``task_queue`` component."""
    from app.services.cluster.jetstream import ClusterSettings
    from app.services.cluster.task_board import TaskBoard

    board = TaskBoard(ClusterSettings.from_settings(settings), live)
    h = components.health["task_queue"] = ComponentHealth("task_queue", essential=True, device="nats")
    await board.start()
    h.state = ComponentState.READY

    def probe(health: ComponentHealth) -> None:
        info = board.health()
        health.info.update(info)
        if info["connected"]:
            health.info.pop("degraded", None)
            health.detail = ""
        else:
            health.info["degraded"] = health.detail = f"NATS at {info['url']} unreachable (reconnecting)"

    components.probes["task_queue"] = probe
    return board
