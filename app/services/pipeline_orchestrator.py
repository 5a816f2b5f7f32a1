"""Runs one processing task: plays the cameras' videos as if live and publishes every processed frame.

Pacing: global frame *g* is due ``g / fps / speed`` seconds after the start. A frame that is already a frame
period late when it comes out of the (bounded) read-ahead queue is skipped and counted, so when processing
is slower than the video, latency stays bounded instead of a backlog growing. ``speed = 0`` processes every
frame as fast as possible (offline evaluation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psutil

from app.core.config import Settings
from app.core.lifecycle import Components, gpu_summary
from app.services.environments import EnvironmentSpec
from app.services.frame_encoder import TurboJpegEncoder
from app.services.frame_processor import FrameProcessor, FrameResult
from app.services.homography import HomographyService
from app.services.notifications import NotificationHub
from app.services.processing_task import TaskState, TaskStatus
from app.services.reid import IdentityRegistry, ReIdConfig
from app.services.video_data_manager import SynchronizedReader, VideoDataManagerService

log = logging.getLogger(__name__)


class PipelineOrchestrator:
    def __init__(
        self,
        task: TaskState,
        environment: EnvironmentSpec,
        components: Components,
        hub: NotificationHub,
        settings: Settings,
        videos: VideoDataManagerService | None = None,
    ) -> None:
        self.task = task
        self.env = environment
        self.components = components
        self.hub = hub
        self.settings = settings
        self.videos = videos or VideoDataManagerService()
        self.stop_requested = asyncio.Event()
        self._latencies: deque[float] = deque(maxlen=200)
        self._done_times: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)
        self._stage_ms: dict[str, deque[float]] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        task = self.task
        try:
            task.set(TaskStatus.INITIALIZING, "waiting for models")
            await self.components.wait_loaded()
            if not self.components.essentials_ready():
                failed = [h.name + ": " + h.detail for h in self.components.health.values() if h.detail]
                raise RuntimeError("models not available: " + "; ".join(failed))
            task.set(step="opening videos")
            cams = [self.env.cameras[c] for c in task.camera_ids]
            sources = await asyncio.to_thread(self.videos.open, cams)
            reader = SynchronizedReader(sources, read_ahead=4)
            processor = self._build_processor()
            reader.start()
            try:
                await self._loop(reader, processor)
            finally:
                await asyncio.to_thread(reader.close)
            if self.stop_requested.is_set():
                task.set(TaskStatus.STOPPED, "stopped", "stopped on request")
            else:
                task.progress = 1.0
                task.set(TaskStatus.COMPLETED, "completed", "all frames played")
        except asyncio.CancelledError:
            task.set(TaskStatus.STOPPED, "stopped", "cancelled")
            raise
        except Exception as exc:
            log.exception("task %s failed", task.task_id)
            task.set(TaskStatus.FAILED, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            self.hub.publish_json(task.task_id, self.status_message())
            self.hub.close_task(task.task_id)

    def _build_processor(self) -> FrameProcessor:
        c = self.components
        assert c.detector is not None and c.embedder is not None and c.tracker_factory is not None
        s = self.settings
        trackers = {
            cid: c.tracker_factory.create(cid, self.env.cameras[cid].fps or 10.0) for cid in self.task.camera_ids
        }
        reid_cfg = ReIdConfig(
            match_threshold=s.reid_match_threshold,
            max_map_distance_m=s.reid_max_map_distance_m,
            gallery_size=s.reid_gallery_size,
            identity_ttl_s=s.reid_identity_ttl_s,
        )
        return FrameProcessor(
            detector=c.detector,
            embedder=c.embedder,
            trackers=dict(trackers),
            homography=HomographyService(self.env),
            identities=IdentityRegistry(c.embedder.dim, reid_cfg),
            encoder=TurboJpegEncoder(),
            jpeg_quality=s.jpeg_quality,
        )

    # -- main loop ------------------------------------------------------------------------------
    async def _loop(self, reader: SynchronizedReader, processor: FrameProcessor) -> None:
        task = self.task
        speed = self.settings.playback_speed
        period = 1.0 / reader.fps
        total = reader.total_frames
        task.set(TaskStatus.PROCESSING, "processing")
        start = time.monotonic()
        next_status = start
        while not self.stop_requested.is_set():
            gf = await asyncio.to_thread(reader.get)
            if gf is None:
                break
            decoded_at = time.monotonic()
            if speed > 0:
                due = start + gf.timestamp_s / speed
                now = time.monotonic()
                if now > due + period / speed and gf.index > 0:
                    task.stats.frames_skipped += 1
                    continue
                if now < due:
                    await asyncio.sleep(due - now)
                    decoded_at = time.monotonic()
            result = await asyncio.to_thread(processor.process, gf)
            self._publish(result, decoded_at, processor)
            if total:
                task.progress = min(1.0, (gf.index + 1) / total)
            if time.monotonic() >= next_status:
                self.hub.publish_json(task.task_id, self.status_message())
                next_status = time.monotonic() + self.settings.status_interval_s

    def _publish(self, result: FrameResult, decoded_at: float, processor: FrameProcessor) -> None:
        task = self.task
        tid = task.task_id
        for cam in result.cameras:
            self.hub.publish_frame(tid, cam.camera_id, cam.frame_message)
        self.hub.publish_json(tid, self.tracking_message(result))
        self.hub.publish_json(
            tid,
            {
                "type": "frame_sync",
                "global_frame_index": result.global_frame_index,
                "camera_ids": [c.camera_id for c in result.cameras],
            },
        )
        now = time.monotonic()
        self._latencies.append((now - decoded_at) * 1000.0)
        st = task.stats
        st.frames_processed += 1
        for cam in result.cameras:
            st.camera_frames[cam.camera_id] = st.camera_frames.get(cam.camera_id, 0) + 1
        self._done_times.append((now, dict(st.camera_frames)))
        st.persons_now = result.persons
        st.global_ids_total = processor.identities.total_identities
        for k, v in result.stage_ms.items():
            self._stage_ms.setdefault(k, deque(maxlen=50)).append(v)
        self._update_rates()

    def _update_rates(self) -> None:
        st = self.task.stats
        if len(self._done_times) >= 2:
            (t0, c0), (t1, c1) = self._done_times[0], self._done_times[-1]
            dt = max(t1 - t0, 1e-6)
            st.fps_per_camera = {k: round((v - c0.get(k, 0)) / dt, 2) for k, v in c1.items()}
            st.fps_total = round(sum(st.fps_per_camera.values()), 2)
        lat = np.array(self._latencies)
        st.latency_ms_p50 = round(float(np.percentile(lat, 50)), 1)
        st.latency_ms_p95 = round(float(np.percentile(lat, 95)), 1)
        st.stage_ms = {k: round(float(np.mean(v)), 1) for k, v in self._stage_ms.items()}

    # -- messages -------------------------------------------------------------------------------
    def tracking_message(self, result: FrameResult) -> dict[str, Any]:
        return {
            "type": "tracking_update",
            "task_id": self.task.task_id,
            "global_frame_index": result.global_frame_index,
            "scene_id": self.env.id,
            "timestamp_processed_utc": datetime.now(UTC).isoformat(),
            "timestamp_video_s": round(result.timestamp_video_s, 4),
            "cameras": {
                cam.camera_id: {
                    "frame_index": cam.frame_index,
                    "timestamp_video_s": round(cam.timestamp_video_s, 4),
                    "tracks": [
                        {
                            "track_id": t.track_id,
                            "global_id": t.global_id,
                            "bbox_xyxy": [round(v, 1) for v in t.bbox_xyxy],
                            "confidence": round(t.confidence, 3),
                            "map_coords": None if t.map_coords is None else [round(v, 3) for v in t.map_coords],
                        }
                        for t in cam.tracks
                    ],
                }
                for cam in result.cameras
            },
        }

    def status_message(self) -> dict[str, Any]:
        t = self.task
        st = t.stats
        det = self.components.health["detector"]
        return {
            "type": "status_update",
            "task_id": t.task_id,
            "status": t.status.value,
            "progress": round(t.progress, 4),
            "current_step": t.current_step,
            "details": t.details,
            "fps": {"total": st.fps_total, "per_camera": st.fps_per_camera},
            "latency_ms": {"p50": st.latency_ms_p50, "p95": st.latency_ms_p95},
            "stage_ms": st.stage_ms,
            "frames_processed": st.frames_processed,
            "frames_skipped": st.frames_skipped,
            "persons_now": st.persons_now,
            "global_ids_total": st.global_ids_total,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "gpu": gpu_summary(),
            "detector": {"name": det.info.get("name"), "device": det.device, "precision": det.info.get("precision")},
        }
