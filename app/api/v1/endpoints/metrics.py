"""``GET /metrics``: Prometheus text format (docs/metrics.md); protected like the rest when auth is on."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from app.api.auth import Viewer
from app.services.metrics import CONTENT_TYPE, Metrics

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"},
        401: {"description": "Auth is on and the key is missing or wrong"},
        403: {"description": "The key is limited to some environments (metrics cover all of them)"},
    },
)
async def metrics(request: Request, principal: Viewer) -> Response:
    if principal.environments is not None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "metrics cover every environment: use a key without a scope")
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE)
