"""What a task's run needs from whoever placed it (a cluster worker): fencing, checkpoints, resume.

The single-process server passes none of this; a worker (``app.services.cluster.worker``) passes a
``RunControl`` so the orchestrator stops publishing the moment its lease is gone, checkpoints after its history
is committed, and resumes from a checkpoint instead of frame 0.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol


class LeaseLostError(RuntimeError):
    """This process no longer holds the task: another worker may run it; publish nothing more."""


@dataclass(slots=True)
class Checkpoint:
    """Where a resumed run starts: after ``frame`` (a global frame whose history is committed)."""

    frame: int
    video_ts_s: float
    playback_started_ts: float
    """Wall-clock playback start of the original run: event times stay on one timeline across resumes."""
    identity_seq: int
    """Identity events recorded so far (their sequence numbers continue)."""
    frames_processed: int
    frames_skipped: int
    camera_frames: dict[str, int] = field(default_factory=dict)
    state: bytes = b""
    """The pipeline's state (trackers, identity registry), from ``FrameProcessor.export_state``."""


class RunControl(Protocol):
    epoch: int
    """This run's fencing epoch (> 0)."""
    checkpoint_interval_s: float
    resume: Checkpoint | None
    hand_back: asyncio.Event
    """Set on SIGTERM: checkpoint now and return the task to the queue."""

    def holds_lease(self) -> bool:
        """False once the lease may have expired (then it stays False): publish and record nothing more."""

    async def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store the checkpoint durably (raises when it could not)."""
