"""Prometheus metrics for ``GET /metrics`` (docs/metrics.md).

Two kinds, on one registry per app (several apps in one process, as in the tests, never mix their figures):

* **Histograms observed as work happens**: pipeline stage time, frame → published and frame → WebSocket send
  latency. Their labels are bounded (stage names, camera ids of the configured environments), never task ids.
* **Figures read at scrape time** from the objects that already count them (tasks, the notification hub, the
  history recorder, the live-state store, the GPU): nothing is counted twice, and a task's series go away when
  the task manager forgets it, so the number of series stays bounded like the task list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from app.core.lifecycle import Components
    from app.services.notifications import NotificationHub
    from app.services.processing_task import TaskState
    from app.stores.history.recorder import HistoryRecorder
    from app.stores.live_state import LiveStateStore
    from app.utils.loop_monitor import LoopLagMonitor

STAGE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6, 0.8, 1.2, 2.0, 5.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class PipelineMetrics:
    """What tasks and the hub observe while they run; the collector adds the rest at scrape time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.stage_seconds = Histogram(
            "spoton_stage_seconds",
            "Time per global frame (all cameras of a task) in one pipeline stage.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.publish_latency = Histogram(
            "spoton_frame_publish_latency_seconds",
            "Frame available (decoded, or due when played as if live) to published to clients' outboxes.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.send_latency = Histogram(
            "spoton_frame_send_latency_seconds",
            "Frame available to its WebSocket send completed, per camera.",
            ["camera"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def observe_frame(self, stage_ms: dict[str, float], publish_latency_s: float) -> None:
        for stage, ms in stage_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1000.0)
        self.publish_latency.observe(publish_latency_s)

    def observe_send(self, camera_id: str, latency_s: float) -> None:
        self.send_latency.labels(camera_id).observe(latency_s)


@dataclass
class ScrapeSources:
    """Where the scrape-time figures come from (None: that part is not running in this process)."""

    tasks: Callable[[], Iterable[TaskState]]
    hub: NotificationHub
    components: Components
    live: LiveStateStore | None = None
    history: HistoryRecorder | None = None
    loop_monitor: LoopLagMonitor | None = None
    gpu: Callable[[], dict[str, Any]] | None = None


class StateCollector(Collector):
    def __init__(self, sources: ScrapeSources) -> None:
        self.s = sources

    def collect(self) -> Iterator[Metric]:
        yield from self._tasks()
        yield from self._websockets()
        yield from self._components()
        if self.s.history is not None:
            yield from self._history(self.s.history)
        if self.s.live is not None:
            yield from self._live(self.s.live)
        if self.s.loop_monitor is not None:
            lag = self.s.loop_monitor.summary()
            g = GaugeMetricFamily(
                "spoton_event_loop_lag_seconds", "Event-loop lag over the recent window.", labels=["q"]
            )
            for q in ("p50", "p99", "max"):
                if lag.get(q) is not None:
                    g.add_metric([q], float(lag[q] or 0.0) / 1000.0)
            yield g
        if self.s.gpu is not None:
            yield from self._gpu(self.s.gpu())

    def _tasks(self) -> Iterator[Metric]:
        labels = ["task_id", "environment", "camera"]
        processed = CounterMetricFamily(
            "spoton_frames_processed", "Frames that went through the models, per task and camera.", labels=labels
        )
        skipped = CounterMetricFamily(
            "spoton_frames_skipped",
            "Frames skipped to stay real-time, per task and camera (a skipped global frame skips every camera).",
            labels=labels,
        )
        fps = GaugeMetricFamily("spoton_camera_fps", "Processed frames per second, per task and camera.", labels=labels)
        persons = GaugeMetricFamily("spoton_persons", "People tracked in the last frame.", labels=["task_id"])
        ids = GaugeMetricFamily("spoton_global_ids", "Global identities created so far.", labels=["task_id"])
        by_status: dict[str, int] = {}
        for t in self.s.tasks():
            by_status[t.status.value] = by_status.get(t.status.value, 0) + 1
            st = t.stats
            for cam in t.camera_ids:
                key = [t.task_id, t.environment_id, cam]
                processed.add_metric(key, float(st.camera_frames.get(cam, 0)))
                skipped.add_metric(key, float(st.frames_skipped))
                fps.add_metric(key, float(st.fps_per_camera.get(cam, 0.0)))
            persons.add_metric([t.task_id], float(st.persons_now))
            ids.add_metric([t.task_id], float(st.global_ids_total))
        tasks = GaugeMetricFamily("spoton_tasks", "Tasks this process knows, by status.", labels=["status"])
        for status, n in sorted(by_status.items()):
            tasks.add_metric([status], float(n))
        yield from (processed, skipped, fps, persons, ids, tasks)

    def _websockets(self) -> Iterator[Metric]:
        clients = GaugeMetricFamily(
            "spoton_websocket_clients", "Connected WebSocket clients, per task.", labels=["task_id"]
        )
        for task_id, n in self.s.hub.clients_per_task().items():
            clients.add_metric([task_id], float(n))
        yield clients
        frames, messages = self.s.hub.drop_totals()
        drops = CounterMetricFamily(
            "spoton_websocket_dropped",
            "Frames replaced by newer ones and JSON messages dropped for slow clients.",
            labels=["kind"],
        )
        drops.add_metric(["frame"], float(frames))
        drops.add_metric(["message"], float(messages))
        yield drops

    def _components(self) -> Iterator[Metric]:
        ready = GaugeMetricFamily(
            "spoton_component_ready", "1 when the component is ready, 0 otherwise.", labels=["component", "state"]
        )
        for name, h in self.s.components.health.items():
            ready.add_metric([name, h.state.value], 1.0 if h.state.value == "ready" else 0.0)
        yield ready

    @staticmethod
    def _history(recorder: HistoryRecorder) -> Iterator[Metric]:
        stats = recorder.stats()
        records = CounterMetricFamily(
            "spoton_history_records", "History records through the recorder, by outcome.", labels=["outcome"]
        )
        for outcome in ("produced", "written", "spooled", "replayed", "dropped", "rejected"):
            records.add_metric([outcome], float(stats.get(outcome, 0)))
        yield records
        pending = GaugeMetricFamily(
            "spoton_history_pending", "Records waiting: in memory or on the disk spool.", labels=["where"]
        )
        pending.add_metric(["buffer"], float(stats.get("buffered", 0)))
        pending.add_metric(["spool"], float(stats.get("spool_pending", 0)))
        yield pending
        yield GaugeMetricFamily(
            "spoton_history_spooling",
            "1 while the database is unreachable and records go to the disk spool.",
            value=1.0 if stats.get("mode") == "spooling" else 0.0,
        )

    @staticmethod
    def _live(live: LiveStateStore) -> Iterator[Metric]:
        h = live.health()
        messages = CounterMetricFamily(
            "spoton_live_state_messages",
            "Frames and messages through the live-state store, by outcome.",
            labels=["backend", "outcome"],
        )
        for outcome in ("published", "dropped", "write_errors", "received", "bad_records"):
            if isinstance(h.info.get(outcome), int):
                messages.add_metric([h.backend, outcome], float(h.info[outcome]))
        yield messages
        yield GaugeMetricFamily(
            "spoton_live_state_connected", "1 while the live-state store is reachable.", value=float(h.connected)
        )

    @staticmethod
    def _gpu(summary: dict[str, Any]) -> Iterator[Metric]:
        if not summary.get("available"):
            return
        name = str(summary.get("name", "gpu"))
        mem = GaugeMetricFamily("spoton_gpu_memory_bytes", "GPU memory.", labels=["gpu", "kind"])
        for kind in ("allocated", "reserved", "total", "free"):
            v = summary.get(f"memory_{kind}_mb")
            if isinstance(v, int | float):
                mem.add_metric([name, kind], float(v) * 2**20)
        yield mem
        util = GaugeMetricFamily(
            "spoton_gpu_utilisation_ratio", "GPU utilisation (NVML), 0..1.", labels=["gpu", "kind"]
        )
        for key, kind in (("utilization_gpu_percent", "compute"), ("utilization_memory_percent", "memory")):
            v = summary.get(key)
            if isinstance(v, int | float):
                util.add_metric([name, kind], float(v) / 100.0)
        yield util


class Metrics:
    """One app's registry: the pipeline's histograms and, once the app has started, the scrape-time figures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.pipeline = PipelineMetrics(self.registry)
        self._collector: StateCollector | None = None

    def attach(self, sources: ScrapeSources) -> None:
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = StateCollector(sources)
        self.registry.register(self._collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
