from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.auth import require
from app.api.v1.endpoints import analytics, environments, media, processing_tasks, stream, workers
from app.core.security import Role

# Every route needs at least a viewer key when auth is on; the stream checks its own (it also takes signed URLs).
_viewer = [Depends(require(Role.viewer))]
api_router = APIRouter(prefix="/api/v1")
api_router.include_router(processing_tasks.router, dependencies=_viewer)
api_router.include_router(environments.router, dependencies=_viewer)
api_router.include_router(media.router, dependencies=_viewer)
api_router.include_router(analytics.router, dependencies=_viewer)
api_router.include_router(workers.router, dependencies=_viewer)
api_router.include_router(stream.router)
