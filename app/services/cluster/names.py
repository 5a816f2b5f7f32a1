"""Stream, subject and bucket names of one deployment (``SPOTON_NATS_PREFIX``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClusterNames:
    prefix: str = "spoton"

    @property
    def stream(self) -> str:
        """Work-queue stream of task starts (one message per task; redelivered until acked or terminated)."""
        return f"{self.prefix.upper().replace('-', '_')}_TASKS"

    @property
    def start_subject(self) -> str:
        return f"{self.prefix}.tasks.start"

    @property
    def consumer(self) -> str:
        """The one durable pull consumer every worker binds to."""
        return "workers"

    @property
    def tasks_bucket(self) -> str:
        """KV: task id → ``TaskRecord`` (the authority on a task's placement, epoch and final state)."""
        return f"{self.prefix}_tasks"

    @property
    def workers_bucket(self) -> str:
        """KV: worker id → ``WorkerRecord`` (heartbeats)."""
        return f"{self.prefix}_workers"

    @property
    def checkpoints_bucket(self) -> str:
        """KV: task id → ``Checkpoint`` metadata."""
        return f"{self.prefix}_checkpoints"

    @property
    def state_store(self) -> str:
        """Object store: task id → the pipeline state of its latest checkpoint (trackers, identity galleries)."""
        return f"{self.prefix}_state"

    def stop_subject(self, task_id: str = "*") -> str:
        """Core NATS: an API node asks the worker running a task to stop it (the KV flag is the fallback)."""
        return f"{self.prefix}.control.stop.{task_id}"

    def max_deliveries_advisory(self) -> str:
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{self.consumer}"
