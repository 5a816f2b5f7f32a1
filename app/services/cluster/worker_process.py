"""The ``spoton worker`` process: models, stores and a ``ClusterWorker``, until SIGTERM or SIGINT.

A worker is seen through its heartbeat (``GET /api/v1/workers`` on any API node) and its tasks through the API
nodes; with ``SPOTON_WORKER_HEALTH_PORT`` it also answers ``GET /health`` there (container probes). SIGTERM (or
SIGINT) hands every running task back after a checkpoint, then exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from app.core.config import Settings
from app.core.lifecycle import Components
from app.services.cluster.jetstream import ClusterUnavailableError
from app.services.cluster.worker import ClusterWorker
from app.services.cluster.worker_health import worker_health_app
from app.services.environment_catalog import EnvironmentCatalog
from app.services.notifications import NotificationHub
from app.stores.history.service import start_history
from app.stores.live_state import build_live_state, health_probe
from app.utils.loop_monitor import LoopLagMonitor
from app.utils.server import EmbeddedServer, uvicorn_config

log = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> int:
    catalog = EnvironmentCatalog.from_paths(settings.environments_dir, settings.extra_environments)
    for error in catalog.errors:
        log.error("environment not loaded: %s", error)
    components = Components(settings, catalog)
    live = build_live_state(settings)
    await live.start()
    components.probes["state_store"] = health_probe(live)
    loop_monitor = LoopLagMonitor()
    loop_monitor.start()
    history = await start_history(settings, components)
    hub = NotificationHub(settings.publish_queue_size, live=live, retain_closed_s=settings.live_state_ttl_s)
    worker = ClusterWorker(
        settings, catalog, components, hub, live, history.recorder if history else None, None, loop_monitor
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loader: asyncio.Task[None] | None = None
    server: EmbeddedServer | None = None
    health_server: asyncio.Task[None] | None = None
    try:
        try:
            await worker.start()  # first: a wrong NATS URL fails the start at once, before the models load
        except ClusterUnavailableError as exc:
            log.error("worker %s cannot start: %s", worker.id, exc)
            return 1
        loader = asyncio.create_task(components.load_in_background(), name="load-models")
        if settings.worker_health_port:
            server = EmbeddedServer(
                uvicorn_config(worker_health_app(worker, components), settings.host, settings.worker_health_port,
                               "warning")
            )  # fmt: skip
            health_server = asyncio.create_task(server.serve(), name="worker-health")
        await stop.wait()
        log.info("worker %s: shutting down, handing back %d task(s)", worker.id, len(worker.runs))
    finally:
        if server is not None:
            server.should_exit = True
        await worker.stop()
        if health_server is not None:
            await asyncio.wait({health_server}, timeout=5)
        if history is not None:
            await history.stop()
        await live.close()
        await loop_monitor.stop()
        if loader is not None and not loader.done():
            await asyncio.wait({loader}, timeout=30)
    return 0
