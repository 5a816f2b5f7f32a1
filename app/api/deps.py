"""Access to the application context from requests and WebSockets."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from app.core.config import Settings
from app.core.lifecycle import Components
from app.services.environment_catalog import EnvironmentCatalog
from app.services.notifications import NotificationHub
from app.services.task_manager import TaskManager
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
