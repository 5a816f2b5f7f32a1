"""``GET /health`` of a worker (``SPOTON_WORKER_HEALTH_PORT``): for container and Kubernetes probes.

503 while the models load or when one failed; 200 (``healthy``, or ``degraded`` while NATS or Redis is
reconnecting) once the worker takes tasks. The body has the components and the worker's own record (slots,
running tasks, counters), as ``GET /api/v1/workers`` shows it on the API nodes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Response, status

from app.core.lifecycle import Components
from app.services.cluster.worker import ClusterWorker


def worker_health_app(worker: ClusterWorker, components: Components) -> FastAPI:
    app = FastAPI(title="SpotOn worker", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health(response: Response) -> dict[str, Any]:
        overall = components.overall()
        if overall == "healthy" and not worker.connected:
            overall = "degraded"
        if overall in ("starting", "unhealthy"):
            response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {
            "status": overall,
            "role": "worker",
            "nats_connected": worker.connected,
            "components": {
                name: {"state": h.state.value, "essential": h.essential, "device": h.device, "detail": h.detail}
                for name, h in components.health.items()
            },
            "worker": asdict(worker.record()),
        }

    return app
