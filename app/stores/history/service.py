"""The history as the server holds it: repository + recorder, started and stopped with the app, reported in
``/health`` as the ``history_store`` component (non-essential: when the database is down the server works on,
spooling, and reports ``degraded``)."""

from __future__ import annotations

from app.core.config import Settings
from app.core.lifecycle import ComponentHealth, Components, ComponentState
from app.stores.history.analytics import HistoryAnalytics
from app.stores.history.recorder import HistoryRecorder, RecorderConfig, RecorderReport
from app.stores.history.repository import build_history_repository
from app.stores.history.spool import DiskSpool


def recorder_config(settings: Settings) -> RecorderConfig:
    return RecorderConfig(
        batch_size=settings.history_batch_size,
        flush_interval_s=settings.history_flush_interval_s,
        buffer_size=settings.history_buffer_size,
        retry_s=settings.history_retry_s,
        retry_max_s=settings.history_retry_max_s,
        write_timeout_s=settings.history_write_timeout_s,
        migrate_schema=settings.history_auto_migrate,
    )


class HistoryService:
    def __init__(self, settings: Settings, health: ComponentHealth | None = None) -> None:
        self.settings = settings
        self.repository = build_history_repository(settings)
        spool_dir = settings.history_spool_dir or settings.data_dir / "spool"
        self.recorder = HistoryRecorder(self.repository, DiskSpool(spool_dir), recorder_config(settings))
        self.analytics: HistoryAnalytics = self.repository.analytics
        self.health = health
        if health is not None:
            health.device = self.repository.backend
            self.recorder.on_report = self._report

    def _report(self, report: RecorderReport) -> None:
        h = self.health
        assert h is not None
        h.state = ComponentState.READY if report.ok else ComponentState.FAILED
        h.detail = report.detail
        h.info.update(report.info)

    async def start(self) -> None:
        await self.recorder.start()

    async def stop(self) -> None:
        await self.recorder.stop()


async def start_history(settings: Settings, components: Components) -> HistoryService | None:
    """The started history service, reported as the ``history_store`` component of ``/health`` (non-essential);
    None when ``history_enabled`` is off (reported as such)."""
    health = components.health.setdefault("history_store", ComponentHealth("history_store", essential=False))
    if not settings.history_enabled:
        health.state = ComponentState.READY
        health.info["enabled"] = False
        return None
    service = HistoryService(settings, health)
    await service.start()
    return service
