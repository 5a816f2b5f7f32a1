"""FastAPI application: REST under /api/v1, the tracking WebSocket, and /health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app.api.auth import require
from app.api.compat import legacy_ws as compat_ws
from app.api.compat import rest as compat_rest
from app.api.compat.aliases import AliasTable
from app.api.deps import AppContext
from app.api.limits import BodySizeLimit, StartRateLimiter
from app.api.security_headers import SecurityHeaders
from app.api.v1.endpoints import health
from app.api.v1.endpoints import metrics as metrics_endpoint
from app.api.v1.router import api_router
from app.api.viewer import WEB_DIR
from app.api.viewer import router as viewer_router
from app.api.websockets import router as ws_router
from app.core.config import Settings, get_settings
from app.core.lifecycle import Components, gpu_summary
from app.core.security import KeyStore, Role
from app.services.cluster.roles import effective_role, start_board
from app.services.environment_catalog import EnvironmentCatalog
from app.services.metrics import Metrics, ScrapeSources
from app.services.notifications import NotificationHub
from app.services.task_manager import TaskManager
from app.stores.history.service import start_history
from app.stores.live_state import build_live_state, health_probe
from app.utils.loop_monitor import LoopLagMonitor

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    role = effective_role(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        catalog = EnvironmentCatalog.from_paths(settings.environments_dir, settings.extra_environments)
        if settings.frontend_compat:  # a bad alias table stops the start with its message
            app.state.frontend_aliases = AliasTable.build(settings.frontend_aliases, catalog)
        components = Components(settings, catalog, run_models=role != "api")
        live = build_live_state(settings)
        await live.start()
        components.probes["state_store"] = health_probe(live)
        board = await start_board(settings, live, components) if role in ("api", "all") else None
        hub = NotificationHub(settings.publish_queue_size, live=live, retain_closed_s=settings.live_state_ttl_s)
        loop_monitor = LoopLagMonitor()
        loop_monitor.start()
        history = await start_history(settings, components)
        app.state.history = history
        recorder = history.recorder if history else None
        tasks = TaskManager(
            settings,
            catalog,
            components,
            hub,
            loop_monitor,
            live=live,
            history=recorder,
            metrics=metrics.pipeline,
            board=board,
        )
        worker = None
        if role == "all":  # this process is one of the cluster's workers too, with a hub of its own
            from app.services.cluster.worker import ClusterWorker

            worker_hub = NotificationHub(
                settings.publish_queue_size, live=live, retain_closed_s=settings.live_state_ttl_s
            )
            worker = ClusterWorker(
                settings, catalog, components, worker_hub, live, recorder, metrics.pipeline, loop_monitor
            )
            await worker.start()
        app.state.worker = worker
        hub.send_observer = metrics.pipeline.observe_send
        metrics.attach(ScrapeSources(tasks.list, hub, components, live, recorder, loop_monitor, gpu_summary))
        app.state.ctx = AppContext(settings, catalog, components, hub, tasks, loop_monitor)
        loader = asyncio.create_task(components.load_in_background(), name="load-models")
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await tasks.shutdown()
            if board is not None:
                await board.close()
            if history is not None:
                await history.stop()
            await live.close()
            await loop_monitor.stop()
            if not loader.done():
                await asyncio.wait({loader}, timeout=30)

    keys = KeyStore.load(
        settings.api_keys,
        settings.api_keys_file,
        settings.auth_secret.get_secret_value() if settings.auth_secret else None,
        settings.signed_url_ttl_s,
    )
    if settings.jwt_issuer:
        from app.core.jwt_auth import JwtVerifier

        keys.tokens = JwtVerifier(
            settings.jwt_issuer,
            settings.jwt_audience,
            settings.jwt_jwks_url or None,
            settings.jwt_public_key_file,
            settings.jwt_role_claim,
            settings.jwt_environments_claim,
        )
    app = FastAPI(
        title="SpotOn",
        version="0.1.0",
        description="Real-time multi-camera person tracking on a metric map.",
        lifespan=lifespan,
    )
    app.state.keys = keys
    app.state.role = role
    metrics = Metrics()
    app.state.metrics = metrics
    app.state.start_limiter = StartRateLimiter(settings.task_starts_per_minute)
    app.add_middleware(BodySizeLimit, limit=settings.max_request_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.include_router(api_router)
    app.include_router(ws_router)
    app.include_router(health.router)
    app.include_router(metrics_endpoint.router)
    app.include_router(viewer_router)
    if settings.frontend_compat:
        app.include_router(compat_rest.router, dependencies=[Depends(require(Role.viewer))])
        app.include_router(compat_ws.router)
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Content-Type", "Authorization"],
            max_age=600,
        )
    app.mount("/viewer", StaticFiles(directory=WEB_DIR), name="viewer")
    return app
