"""Record the identity layer's inputs once, replay only the identity layer many times.

`record` runs the full pipeline (`run_pipeline`) and logs every track of every frame with the descriptors of
its crop (through the pipeline's crop photometry) from each embedder asked for; `replay` feeds the log through a
fresh `IdentityRegistry` the way `FrameProcessor` does (a track is described when `describe_now` says so) and
returns the same `PipelineOutput` a full run gives, so `score` reports on it unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.core.config import Settings
from app.evaluation.observation_log import LoggedFrame, LoggedTrack, ObservationLog
from app.evaluation.tracking_eval import Dataset, OutputCollector, PipelineOutput, run_pipeline
from app.models.base import AppearanceEmbedder, FloatArray
from app.services.frame_processor import crop_boxes, describe_now
from app.services.homography import HomographyService
from app.services.still_objects import Sighting, StillObjects

if TYPE_CHECKING:
    from app.services.frame_processor import FrameProcessor, FrameResult
    from app.services.video_data_manager import GlobalFrame


def _embedders(names: list[str], settings: Settings) -> dict[str, AppearanceEmbedder]:
    from app.models.registry import build_embedder

    out: dict[str, AppearanceEmbedder] = {}
    for name in names:
        out[name] = build_embedder(settings.model_copy(update={"embedder": name}))
    return out


def record(
    dataset: Dataset, settings: Settings, path: Path, embedders: list[str], max_frames: int | None = None
) -> PipelineOutput:
    """Run the pipeline over the dataset and save its identity inputs to ``path``."""
    models = _embedders(embedders, settings)
    log = ObservationLog(dataset.env.id, list(embedders))

    def on_result(gf: GlobalFrame, result: FrameResult, processor: FrameProcessor) -> None:
        tracks: list[LoggedTrack] = []
        for cam in result.cameras:
            tracked = processor.tracked.get(cam.camera_id, [])  # every track, reported or not
            logged = [
                LoggedTrack(cam.camera_id, cam.frame_index, t.track_id, t.bbox_xyxy, t.confidence, t.det_index >= 0)
                for t in tracked
            ]
            boxes = np.array([t.bbox_xyxy for t in tracked], np.float64).reshape(-1, 4)
            crops, kept = crop_boxes(cam.image, boxes)
            crops = processor.photometry.normalise(cam.camera_id, crops)  # as the pipeline's descriptors see them
            for name, model in models.items():
                if crops:
                    for i, v in zip(kept, model.embed(crops), strict=True):
                        if logged[i].detected:
                            logged[i].descriptors[name] = v.astype(np.float16)
            tracks.extend(logged)
        log.frames.append(LoggedFrame(gf.index, gf.timestamp_s, tracks))

    out = run_pipeline(dataset, settings, max_frames=max_frames, on_result=on_result)
    log.save(path)
    return out


def _descriptor_of(log: ObservationLog, name: str, colour_weight: float) -> Callable[[LoggedTrack], FloatArray | None]:
    """How to get embedder ``name``'s vector from a logged track (``fused`` is made from its logged parts)."""
    if name in log.embedders:
        return lambda t: None if name not in t.descriptors else t.descriptors[name].astype(np.float32)
    if name == "fused" and {"part_colour", "efficientnet_lite0"} <= set(log.embedders):
        a, b = float(np.sqrt(colour_weight)), float(np.sqrt(1.0 - colour_weight))

        def fused(t: LoggedTrack) -> FloatArray | None:
            if "part_colour" not in t.descriptors:
                return None
            pc = t.descriptors["part_colour"].astype(np.float32)
            ef = t.descriptors["efficientnet_lite0"].astype(np.float32)
            return np.concatenate([pc / max(float(np.linalg.norm(pc)), 1e-12) * a,
                                   ef / max(float(np.linalg.norm(ef)), 1e-12) * b])

        return fused
    raise ValueError(f"the log has descriptors of {log.embedders}, not of embedder '{name}'; record it again")


def replay(log: ObservationLog, dataset: Dataset, settings: Settings) -> PipelineOutput:
    """The identity layer alone over a recorded log, with ``settings``' identity options."""
    from app.services.reid import IdentityRegistry, Observation

    name = "fused" if settings.embedder == "auto" else settings.embedder  # what build_embedder makes of auto
    describe = _descriptor_of(log, name, settings.embedder_colour_weight)
    dim = next((len(v) for f in log.frames for t in f.tracks if (v := describe(t)) is not None), 1)
    registry = IdentityRegistry.from_settings(settings, dim, dataset.env)
    homography = HomographyService(dataset.env, settings.map_cut_box_aspect)  # positions as the pipeline makes them
    every = max(1, settings.reid_embed_every_n)
    described: dict[tuple[str, int], int] = {}
    collect = OutputCollector(list(dataset.env.cameras), dataset.first_frame)
    t0 = time.perf_counter()
    still = StillObjects.from_settings(settings)
    for frame in log.frames:
        tracks = frame.tracks
        if still is not None:  # as `FrameProcessor` leaves them out, camera by camera
            tracks = []
            for cam in dict.fromkeys(t.camera_id for t in frame.tracks):
                mine = [t for t in frame.tracks if t.camera_id == cam]
                seen = [Sighting(t.track_id, t.bbox_xyxy, t.detected) for t in mine]
                tracks += still.people(cam, mine, seen, registry, frame.timestamp_s)
        observations = []
        for t in tracks:
            vec = None
            if t.detected:
                key = (t.camera_id, t.track_id)
                n = described.get(key, 0)
                wants = registry.needs_looks(t.camera_id, t.track_id)
                if describe_now(n, settings.reid_embed_first_n, every, wants):
                    vec = describe(t)
                described[key] = n + 1
            xy = homography.boxes_to_map(t.camera_id, [t.bbox_xyxy])[0]
            sd = float(homography.boxes_sigma_m(t.camera_id, [t.bbox_xyxy])[0])
            pos = (float(xy[0]), float(xy[1])) if np.all(np.isfinite(xy)) else None
            observations.append(Observation(t.camera_id, t.track_id, vec, pos, t.confidence, t.bbox_xyxy,
                                            sd if np.isfinite(sd) else None))  # fmt: skip
        gids = registry.assign(observations, frame.timestamp_s)
        for t, gid in zip(tracks, gids, strict=True):
            if gid is not None:  # as the pipeline reports: a new person not shown yet is left out
                collect.box(t.camera_id, t.frame_index, gid, t.track_id, t.bbox_xyxy)
        for ev in registry.drain_events():
            collect.event(ev.kind.value)
    cams = sum(len({t.camera_id for t in f.tracks}) for f in log.frames)
    return collect.output(len(log.frames), cams, time.perf_counter() - t0)
