"""Runs one processing task: plays the cameras' videos as if live and publishes every processed frame.

Pacing: global frame *g* is due ``g / fps / speed`` seconds after the start. A frame that is already a frame
period late when it comes out of the (bounded) read-ahead queue is skipped and counted, so when processing
is slower than the video, latency stays bounded instead of a backlog growing. ``speed = 0`` processes every
frame as fast as possible (offline evaluation).

Overlap: while the models analyse frame *g+1* in a worker thread, the JPEGs of frame *g* are encoded in a
small pool and published in order; at most ``MAX_IN_FLIGHT`` frames wait for encoding, so this stage is
bounded too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

from app.core.config import Settings
from app.core.lifecycle import Components, gpu_summary
from app.models.registry import build_tracker_embedder
from app.services.crop_photometry import build_crop_photometry
from app.services.detection_regions import RegionPlanner
from app.services.detector_scale import DetectorScale
from app.services.environments import CameraSpec, EnvironmentSpec
from app.services.frame_encoder import FrameEncoder, build_encoder
from app.services.frame_processor import DetectedFrame, EncodedFrame, FrameProcessor, FrameResult, encode_frame
from app.services.homography import HomographyService
from app.services.jpeg_quality import QualityController
from app.services.metrics import PipelineMetrics
from app.services.motion_gate import MotionGate
from app.services.notifications import FrameMessage, NotificationHub
from app.services.processing_task import TaskState, TaskStatus
from app.services.reid import IdentityRegistry
from app.services.run_control import Checkpoint, LeaseLostError, RunControl
from app.services.still_objects import StillObjects
from app.services.video_data_manager import (
    FrameSource,
    GlobalFrame,
    SynchronizedReader,
    VideoDataManagerService,
    VideoSourceError,
)
from app.services.video_sources.base import DownloadProgress
from app.utils.loop_monitor import LoopLagMonitor

if TYPE_CHECKING:
    from app.stores.history.recorder import HistoryRecorder, TaskHistory

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 2

_Taken = tuple[GlobalFrame, float, "asyncio.Future[DetectedFrame]"]
"""A frame taken from the reader: the frame, when it became available, its detection (running)."""
FINAL_FLUSH_S = 5.0
"""How long a task that ends waits for its history to be committed before it says so."""
MODEL_STAGES = ("detect", "embed")


class PipelineOrchestrator:
    def __init__(
        self,
        task: TaskState,
        environment: EnvironmentSpec,
        components: Components,
        hub: NotificationHub,
        settings: Settings,
        videos: VideoDataManagerService | None = None,
        loop_monitor: LoopLagMonitor | None = None,
        encoder: FrameEncoder | None = None,
        history: HistoryRecorder | None = None,
        metrics: PipelineMetrics | None = None,
        control: RunControl | None = None,
    ) -> None:
        self.task = task
        self.control = control
        """Scale-out: the lease (fencing), checkpoints and the resume point; None in the single-process server."""
        self.outcome = "finished"
        """``finished`` (completed, failed, stopped), ``handed_back`` (checkpointed for another worker) or
        ``lease_lost`` (another worker may run it: this run published nothing after it noticed)."""
        self.metrics = metrics
        self.history = history
        self._history: TaskHistory | None = None
        self.env = environment
        self.components = components
        self.hub = hub
        self.settings = settings
        self.videos = videos or VideoDataManagerService(settings)
        self.loop_monitor = loop_monitor
        self.encoder = encoder or build_encoder(settings.jpeg_encoder)
        self.stop_requested = asyncio.Event()
        self.quality = QualityController(settings.jpeg_quality, settings.jpeg_quality_min, settings.jpeg_quality_max)
        self._latencies: deque[float] = deque(maxlen=500)
        self._done_times: deque[tuple[float, dict[str, int]]] = deque(maxlen=64)
        self._stage_ms: dict[str, deque[float]] = {}
        self._model_ms_total = 0.0
        self._sleep_s = 0.0
        self._started_at: float | None = None
        self._playback_started_ts = time.time()
        self._skipped_at_last_status = 0

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        task = self.task
        try:
            if self.history is not None:
                self._history = self.history.open_task(task, task.epoch)
            resume = self.control.resume if self.control is not None else None
            if resume is not None:  # clients see the takeover before the first resumed frame
                task.set(TaskStatus.RESUMING, "resuming", f"worker {task.worker_id} resumes after frame {resume.frame}")
                self.hub.publish_json(task.task_id, self.status_message())
            task.set(TaskStatus.INITIALIZING, "waiting for models")
            await self.components.wait_loaded()
            if not self.components.essentials_ready():
                failed = [h.name + ": " + h.detail for h in self.components.health.values() if h.detail]
                raise RuntimeError("models not available: " + "; ".join(failed))
            task.set(step="opening videos")
            cams = [self.env.cameras[c] for c in task.camera_ids]
            sources = await self._open_sources(cams)
            if sources is None:  # stopped while the first sub-videos were downloading
                task.set(TaskStatus.STOPPED, "stopped", "stopped on request")
                return
            processor = self._build_processor()
            if resume is not None:
                task.set(step="restoring checkpoint", details=f"resuming after frame {resume.frame}")
                await asyncio.to_thread(processor.restore_state, resume.state)
            reader = SynchronizedReader(
                sources,
                read_ahead=self.settings.read_ahead_frames,
                start_frame=0 if resume is None else resume.frame + 1,
            )
            reader.start()
            try:
                await self._loop(reader, processor)
            finally:
                await asyncio.to_thread(reader.close)
            if self.stop_requested.is_set():
                task.set(TaskStatus.STOPPED, "stopped", "stopped on request")
            elif self.outcome == "handed_back":
                task.set(TaskStatus.RESUMING, "resuming", "handed back to the queue: another worker continues it")
            else:
                task.progress = 1.0
                task.set(TaskStatus.COMPLETED, "completed", "all frames played")
        except asyncio.CancelledError:
            if self.control is not None and self.control.hand_back.is_set():
                # a worker shutting down gave up waiting for a checkpoint: the task resumes from the last one
                self.outcome = "handed_back"
                task.set(TaskStatus.RESUMING, "resuming", "handed back to the queue: another worker continues it")
            else:
                task.set(TaskStatus.STOPPED, "stopped", "cancelled")
            raise
        except LeaseLostError as exc:
            self.outcome = "lease_lost"
            log.warning("task %s: stopped without a trace, the lease is gone: %s", task.task_id, exc)
        except Exception as exc:
            log.exception("task %s failed", task.task_id)
            task.set(TaskStatus.FAILED, "failed", f"{type(exc).__name__}: {exc}")
        finally:
            if self.outcome == "lease_lost":
                self.hub.close_task(task.task_id, publish=False)
            else:
                if self._history is not None and self.outcome == "finished":
                    self._history.update(task)
                    if self.history is not None and task.current_step != "cancelled":
                        # the final status promises committed history: analytics right after it see all
                        await self.history.flush(timeout=FINAL_FLUSH_S)
                self.hub.publish_json(task.task_id, self.status_message())
                self.hub.close_task(task.task_id, publish=self.outcome == "finished")

    async def _open_sources(self, cams: list[CameraSpec]) -> list[FrameSource] | None:
        """The cameras' sources, or None when stopped first. While remote sub-videos arrive the task is
        DOWNLOADING with byte progress, on the status endpoint and (every ``status_interval_s``) the WebSocket."""
        task = self.task
        next_publish = 0.0
        downloaded = False

        def on_download(p: DownloadProgress) -> None:
            nonlocal next_publish, downloaded
            downloaded = True
            task.progress = p.fraction
            mib = 2**20
            task.set(
                TaskStatus.DOWNLOADING,
                "downloading videos",
                f"first sub-videos: {p.files_done}/{p.files_total} files, "
                f"{p.done_bytes / mib:.1f} of {p.total_bytes / mib:.1f} MiB",
            )
            if time.monotonic() >= next_publish:
                self.hub.publish_json(task.task_id, self.status_message())
                next_publish = time.monotonic() + self.settings.status_interval_s

        opening = asyncio.ensure_future(self.videos.open_async(cams, on_download=on_download))
        stopping = asyncio.ensure_future(self.stop_requested.wait())
        try:
            await asyncio.wait({opening, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not opening.done():
                opening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await opening
        if opening.cancelled():
            return None
        sources = opening.result()
        if downloaded:
            task.progress = 0.0
            task.set(step="opening videos", details="")
        return sources

    def _build_processor(self) -> FrameProcessor:
        c = self.components
        assert c.detector is not None and c.embedder is not None and c.tracker_factory is not None
        s = self.settings
        trackers = {
            cid: c.tracker_factory.create(cid, self.env.cameras[cid].fps or 10.0) for cid in self.task.camera_ids
        }
        return FrameProcessor(
            detector=c.detector,
            embedder=c.embedder,
            trackers=dict(trackers),
            homography=HomographyService(self.env, s.map_cut_box_aspect),
            identities=IdentityRegistry.from_settings(s, c.embedder.dim, self.env),
            embed_every_n=s.reid_embed_every_n,
            embed_first_n=s.reid_embed_first_n,
            motion_gate=MotionGate.from_settings(s),
            regions=RegionPlanner.from_settings(s),
            still=StillObjects.from_settings(s),
            scale=DetectorScale.from_settings(s),
            tracker_embedder=build_tracker_embedder(s),
            photometry=build_crop_photometry(s.crop_photometry, s.crop_levels_clip_pct),
        )

    # -- main loop ------------------------------------------------------------------------------
    async def _loop(self, reader: SynchronizedReader, processor: FrameProcessor) -> None:
        task = self.task
        speed = self.settings.playback_speed
        total = reader.total_frames
        control = self.control
        resume = control.resume if control is not None else None
        task.set(TaskStatus.PROCESSING, "processing", "" if resume is None else f"resumed after frame {resume.frame}")
        if resume is not None:
            self._restore_stats(resume)
        if self._history is not None:
            self._history.started(task, reader.fps, None if resume is None else resume.playback_started_ts)
            if resume is not None:
                self._history.continue_sequence(resume.identity_seq)
        start = self._started_at = time.monotonic()
        self._playback_started_ts = time.time() if resume is None else resume.playback_started_ts
        if resume is not None and speed > 0:  # as if live: the frame after the checkpoint is due now
            start -= (resume.frame + 1) / reader.fps / speed
        next_status = start
        next_checkpoint = time.monotonic() + (control.checkpoint_interval_s if control is not None else 0.0)
        in_flight: deque[asyncio.Task[None]] = deque()
        pool = ThreadPoolExecutor(max(1, self.settings.encode_workers), thread_name_prefix="jpeg")
        detect_pool = ThreadPoolExecutor(1, thread_name_prefix="detect")  # one thread: frames detected in order
        ahead: _Taken | None = None
        ended = False
        failure: VideoSourceError | None = None
        mode = self.settings.detect_ahead
        detect_ahead = mode == "on" or (mode == "auto" and speed <= 0)  # live: latency first (docs/performance.md)
        try:
            while not self.stop_requested.is_set():
                current: _Taken | None = None
                if ahead is not None:
                    current, ahead = ahead, None
                elif not ended:
                    try:
                        current = await self._take(reader, processor, detect_pool, start)
                    except VideoSourceError as exc:
                        failure = exc
                if current is None:
                    break
                gf, available_at, detecting = current
                if detect_ahead and not ended:
                    # the next frame is detected (from its due time on) while this one is tracked and identified
                    try:
                        ahead = await self._take(reader, processor, detect_pool, start)
                    except VideoSourceError as exc:  # raised once this frame is out
                        failure = exc
                    ended = ahead is None
                detected = await detecting
                result = await asyncio.to_thread(processor.complete, gf, detected)
                self._model_ms_total += result.model_ms
                while len(in_flight) >= MAX_IN_FLIGHT:
                    await in_flight.popleft()
                previous = in_flight[-1] if in_flight else None
                job = self._encode_and_publish(result, available_at, processor, pool, previous)
                in_flight.append(asyncio.create_task(job))
                if total:
                    task.progress = min(1.0, (gf.index + 1) / total)
                if time.monotonic() >= next_status:
                    self._on_status_tick()
                    next_status = time.monotonic() + self.settings.status_interval_s
                if control is not None and (time.monotonic() >= next_checkpoint or control.hand_back.is_set()):
                    saved = await self._checkpoint(control, in_flight, processor, gf.index, gf.timestamp_s,
                                                   None if ahead is None else ahead[2])
                    next_checkpoint = time.monotonic() + control.checkpoint_interval_s
                    if saved and control.hand_back.is_set() and not self.stop_requested.is_set():
                        self.outcome = "handed_back"
                        break
            for t in in_flight:
                await t
            if failure is not None:  # a broken video fails the task after the frames before it went out
                raise failure
        finally:
            if ahead is not None:  # a frame after the last one processed: its detection is not needed
                ahead[2].cancel()
            for t in in_flight:
                t.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
            detect_pool.shutdown(wait=False, cancel_futures=True)

    async def _take(
        self, reader: SynchronizedReader, processor: FrameProcessor, detect_pool: ThreadPoolExecutor, start: float
    ) -> _Taken | None:
        """The next global frame to process (None at the end) with its detection started: played as if live, a
        frame whose moment has passed by more than a period is skipped, and detection waits for its moment."""
        speed = self.settings.playback_speed
        while True:
            gf = await asyncio.to_thread(reader.get)
            if gf is None:
                return None
            # Latency counts from when the frame exists: its decode, or — played as if live — the moment a live
            # camera would deliver it (frames are decoded ahead of that moment on purpose).
            available_at = max(f.decoded_at for f in gf.frames.values())
            due = None
            if speed > 0:
                due = start + gf.timestamp_s / speed
                if time.monotonic() > due + 1.0 / reader.fps / speed and gf.index > 0:
                    self.task.stats.frames_skipped += 1
                    continue
                available_at = max(available_at, due)
            detecting = asyncio.get_running_loop().run_in_executor(detect_pool, self._detect_when_due, processor,
                                                                   gf, due)  # fmt: skip
            return gf, available_at, detecting

    def _detect_when_due(self, processor: FrameProcessor, gf: GlobalFrame, due: float | None) -> DetectedFrame:
        wait = 0.0 if due is None else due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
            self._sleep_s += wait
        return processor.detect(gf)

    async def _checkpoint(
        self,
        control: RunControl,
        in_flight: deque[asyncio.Task[None]],
        processor: FrameProcessor,
        frame: int,
        video_ts_s: float,
        detecting_ahead: asyncio.Future[DetectedFrame] | None = None,
    ) -> bool:
        """Save a resume point after ``frame``: once its history (and all before it) is committed, so a resumed
        run neither repeats nor misses a record. False when the history could not be committed in time (the
        previous checkpoint stays)."""
        while in_flight:
            await in_flight.popleft()
        if not control.holds_lease():
            raise LeaseLostError("lease lost before a checkpoint")
        if self.history is not None and not await self.history.flush(timeout=max(2.0, control.checkpoint_interval_s)):
            log.warning("task %s: history not committed in time; checkpoint after frame %d skipped",
                        self.task.task_id, frame)
            return False
        if detecting_ahead is not None:  # the next frame's detection also writes the motion gate's state
            await asyncio.wait([detecting_ahead])
        st = self.task.stats
        t0 = time.perf_counter()
        checkpoint = Checkpoint(
            frame=frame,
            video_ts_s=video_ts_s,
            playback_started_ts=self._playback_started_ts,
            identity_seq=self._history.sequence if self._history is not None else 0,
            frames_processed=st.frames_processed,
            frames_skipped=st.frames_skipped,
            camera_frames=dict(st.camera_frames),
            # between frames (the loop waits for it): ~0.1 s for a few MB, off the event loop
            state=await asyncio.to_thread(processor.export_state),
        )
        await control.save_checkpoint(checkpoint)
        self._stage_ms.setdefault("checkpoint", deque(maxlen=50)).append((time.perf_counter() - t0) * 1000.0)
        return True

    def _restore_stats(self, resume: Checkpoint) -> None:
        st = self.task.stats
        st.frames_processed = resume.frames_processed
        st.frames_skipped = resume.frames_skipped
        st.camera_frames = dict(resume.camera_frames)

    def _on_status_tick(self) -> None:
        if self.control is not None and not self.control.holds_lease():
            raise LeaseLostError("lease lost: status not published")
        st = self.task.stats
        self.quality.update(st.frames_skipped - self._skipped_at_last_status)
        self._skipped_at_last_status = st.frames_skipped
        self.hub.publish_json(self.task.task_id, self.status_message())

    async def _encode_and_publish(
        self,
        result: FrameResult,
        decoded_at: float,
        processor: FrameProcessor,
        pool: ThreadPoolExecutor,
        previous: asyncio.Task[None] | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        tid = self.task.task_id
        quality = self.quality.quality
        low_scale = self.settings.jpeg_low_scale if self.hub.wants_low_variant(tid) else None
        low_q = self.settings.jpeg_quality_min
        t0 = time.perf_counter()
        futures = [
            loop.run_in_executor(
                pool, encode_frame, self.encoder, result.global_frame_index, cam, quality, low_scale, low_q
            )
            for cam in result.cameras
        ]
        encoded: list[EncodedFrame] = list(await asyncio.gather(*futures))
        result.stage_ms["encode"] = (time.perf_counter() - t0) * 1000.0
        if previous is not None:
            await previous  # publish in global-frame order
        self._publish(result, encoded, decoded_at, processor)

    def _publish(
        self, result: FrameResult, encoded: list[EncodedFrame], decoded_at: float, processor: FrameProcessor
    ) -> None:
        task = self.task
        tid = task.task_id
        if self.control is not None and not self.control.holds_lease():
            raise LeaseLostError("lease lost: frame not published")
        for enc in encoded:
            self.hub.publish_frame(tid, FrameMessage(enc.camera_id, enc.message, decoded_at, enc.low))
        self.hub.publish_json(tid, self.tracking_message(result))
        for event in result.identity_events:
            self.hub.publish_json(tid, {**event.to_message(), "task_id": tid})
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
        if self.metrics is not None:
            self.metrics.observe_frame(result.stage_ms, now - decoded_at)
        st = task.stats
        st.frames_processed += 1
        for cam in result.cameras:
            st.camera_frames[cam.camera_id] = st.camera_frames.get(cam.camera_id, 0) + 1
        self._done_times.append((now, dict(st.camera_frames)))
        st.persons_now = result.persons
        st.global_ids_total = processor.identities.total_identities
        if processor.scale is not None:
            st.detector_input = {c.camera_id: s for c in result.cameras if (s := processor.scale.size(c.camera_id))}
        if self._history is not None:
            self._history.frame(result)
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
        p50, p95, p99 = np.percentile(np.fromiter(self._latencies, float), [50, 95, 99])
        st.latency_ms_p50, st.latency_ms_p95, st.latency_ms_p99 = (round(float(v), 1) for v in (p50, p95, p99))
        st.send_latency_ms = self.hub.latency(self.task.task_id)
        st.stage_ms = {k: round(float(np.mean(v)), 1) for k, v in self._stage_ms.items()}
        st.jpeg_quality = self.quality.quality
        if self._started_at is not None:
            busy_ms = (time.monotonic() - self._started_at - self._sleep_s) * 1000.0
            if busy_ms > 0:
                st.outside_models_share = round(max(0.0, 1.0 - self._model_ms_total / busy_ms), 3)

    # -- messages -------------------------------------------------------------------------------
    def tracking_message(self, result: FrameResult) -> dict[str, Any]:
        message = self._tracking_message(result)
        if self.control is not None:  # scale-out: which run of the task made it (docs/protocol.md)
            message["epoch"] = self.control.epoch
        return message

    def _tracking_message(self, result: FrameResult) -> dict[str, Any]:
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
            "latency_ms": {"p50": st.latency_ms_p50, "p95": st.latency_ms_p95, "p99": st.latency_ms_p99},
            "send_latency_ms": st.send_latency_ms,
            "stage_ms": st.stage_ms,
            "outside_models_share": st.outside_models_share,
            "jpeg_quality": st.jpeg_quality,
            "event_loop_lag_ms": self.loop_monitor.summary() if self.loop_monitor else None,
            "websocket": self.hub.client_stats(t.task_id),
            "frames_processed": st.frames_processed,
            "frames_skipped": st.frames_skipped,
            "persons_now": st.persons_now,
            "global_ids_total": st.global_ids_total,
            "history": self.history.stats() if self.history is not None else None,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "gpu": gpu_summary(),
            "detector": {
                "name": det.info.get("name"),
                "device": det.device,
                "precision": det.info.get("precision"),
                "input_size": st.detector_input,
            },
            **(
                {"worker_id": t.worker_id, "epoch": t.epoch, "resumed_from_frame": t.resumed_from_frame}
                if self.control is not None
                else {}
            ),
        }
