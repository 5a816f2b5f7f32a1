from __future__ import annotations

from fastapi import APIRouter

from app.api.v1.endpoints import analytics, environments, media, processing_tasks, stream

api_router = APIRouter(prefix="/api/v1")
api_router.include_router(processing_tasks.router)
api_router.include_router(environments.router)
api_router.include_router(media.router)
api_router.include_router(analytics.router)
api_router.include_router(stream.router)
