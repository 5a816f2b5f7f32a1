"""Access to the application context from requests and WebSockets."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, status
from starlette.requests import HTTPConnection

from app.core.config import Settings
from app.core.lifecycle import Components
from app.services.environment_catalog import EnvironmentCatalog
from app.services.notifications import NotificationHub
from app.services.processing_task import TaskState
from app.services.task_manager import TaskManager, UnknownTaskError
from app.stores.live_state import LiveStateUnavailableError
from app.utils.loop_monitor import LoopLagMonitor


@dataclass
class AppContext:
    settings: Settings
    catalog: EnvironmentCatalog
    components: Components
    hub: NotificationHub
    tasks: TaskManager
    loop_monitor: LoopLagMonitor


def get_context(conn: HTTPConnection) -> AppContext:
    ctx: AppContext = conn.app.state.ctx
    return ctx


async def find_task(ctx: AppContext, task_id: str) -> TaskState:
    """The task, run here or by another API process; 404 when unknown, 503 when the live-state store is down."""
    try:
        return await ctx.tasks.find(task_id)
    except UnknownTaskError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"processing task '{task_id}' not found") from None
    except LiveStateUnavailableError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
