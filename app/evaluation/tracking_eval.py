"""``spoton eval DATASET_DIR``: the full pipeline over a dataset with ground truth, scored like trackers are.

The dataset format is the one the product reads (``environment.json`` + one video per camera) plus
``gt/gt_<camera>.txt`` in MOT format with person ids shared by all cameras. Every frame goes through the same
`FrameProcessor` the live pipeline uses, as fast as the machine allows (no pacing, nothing skipped); only the
frames from the first to the last ground-truth frame are scored (the rest is processed, so trackers and
identities see the whole video as they would live).

Scores (`app.evaluation.mot_metrics`): per camera MOTA / IDF1 / HOTA with the product's global ids and, for
comparison, with the per-camera tracker's own ids; across cameras IDF1 / HOTA over the pooled boxes of all
cameras, global-id purity and fragmentation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from app.core.config import Settings
from app.evaluation.mot_metrics import (
    IdentityConsistency,
    MotRows,
    MotScores,
    ReentryStats,
    Sequence,
    frames_to_sequence,
    identity_consistency,
    mot_scores,
    pool,
    reentry_stats,
    with_majority_ids,
    with_true_ids,
)
from app.services.environments import EnvironmentSpec, load_environment

if TYPE_CHECKING:
    from app.services.frame_processor import FrameProcessor, FrameResult
    from app.services.video_data_manager import GlobalFrame

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset folder that cannot be evaluated; the message names the file."""


# -- ground truth -------------------------------------------------------------------------------------------
def read_mot_file(path: Path) -> MotRows:
    """MOT rows ``frame, id, x, y, w, h`` of a ground-truth file (rows with conf 0 are MOT "ignore" rows)."""
    if not path.is_file():
        raise DatasetError(f"ground-truth file not found: {path}")
    try:
        raw = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise DatasetError(f"{path}: not a MOT file (frame,id,x,y,w,h,...): {exc}") from exc
    if raw.size == 0:
        return np.zeros((0, 6), np.float64)
    if raw.shape[1] < 6 or not np.all(np.isfinite(raw[:, :6])):
        raise DatasetError(f"{path}: expected at least 6 finite comma-separated columns per row")
    if raw.shape[1] >= 7:
        raw = raw[raw[:, 6] != 0]
    rows = raw[:, :6].copy()
    if np.any(rows[:, 0] < 1) or np.any(rows[:, 0] != np.round(rows[:, 0])):
        raise DatasetError(f"{path}: frame numbers must be integers ≥ 1")
    return rows


@dataclass(slots=True)
class Dataset:
    env: EnvironmentSpec
    gt: dict[str, MotRows]
    first_frame: int
    """MOT frame number of the videos' first frame (1 in the shared format)."""

    @property
    def scored_frames(self) -> tuple[int, int]:
        """First and last frame present in any camera's ground truth."""
        frames = np.concatenate([g[:, 0] for g in self.gt.values()])
        if frames.size == 0:
            raise DatasetError(f"{self.env.source}: the ground truth has no boxes")
        return int(frames.min()), int(frames.max())


def load_dataset(directory: Path) -> Dataset:
    """A dataset folder; one without any ground-truth file (the demo environment, a recording of one's own) loads
    with ``gt`` empty: it can be run and its identities counted, not scored."""
    directory = Path(directory)
    env = load_environment(directory)
    raw = json.loads((directory / "environment.json").read_text())
    gt_file = {str(c["id"]): c.get("gt_file") for c in raw.get("cameras", [])}
    paths = {cid: directory / (gt_file.get(cid) or f"gt/gt_{cid}.txt") for cid in env.cameras}
    if not any(p.is_file() for p in paths.values()):
        return Dataset(env, {}, int(raw.get("first_frame", 1)))
    gt = {cid: read_mot_file(p) for cid, p in paths.items()}
    return Dataset(env, gt, int(raw.get("first_frame", 1)))


# -- running the pipeline -----------------------------------------------------------------------------------
@dataclass(slots=True)
class PipelineOutput:
    """What the pipeline reported, as MOT rows per camera: with global ids and with tracker ids."""

    global_rows: dict[str, MotRows]
    track_rows: dict[str, MotRows]
    global_frames: int
    camera_frames: int
    wall_s: float
    identity_events: dict[str, int] = field(default_factory=dict)
    detector_input: dict[str, int] = field(default_factory=dict)
    """Cameras whose detector input was changed by the end of the run (`DetectorScale`), and its size."""
    detector_model_input: int | None = None
    """The size the others got (the model's)."""


class OutputCollector:
    """Builds a `PipelineOutput` box by box (shared by the full run and the identity replay)."""

    def __init__(self, cameras: list[str], first_frame: int) -> None:
        self.first_frame = first_frame
        self._global: dict[str, list[tuple[float, ...]]] = {cid: [] for cid in cameras}
        self._track: dict[str, list[tuple[float, ...]]] = {cid: [] for cid in cameras}
        self.events: dict[str, int] = {}

    def box(
        self, camera_id: str, frame_index: int, global_id: int, track_id: int, xyxy: tuple[float, float, float, float]
    ) -> None:
        x1, y1, x2, y2 = xyxy
        frame = frame_index + self.first_frame
        self._global[camera_id].append((frame, global_id, x1, y1, x2 - x1, y2 - y1))
        self._track[camera_id].append((frame, track_id, x1, y1, x2 - x1, y2 - y1))

    def event(self, kind: str) -> None:
        self.events[kind] = self.events.get(kind, 0) + 1

    def output(self, global_frames: int, camera_frames: int, wall_s: float) -> PipelineOutput:
        def arr(rows: list[tuple[float, ...]]) -> MotRows:
            return np.asarray(rows, np.float64).reshape(-1, 6)

        return PipelineOutput(
            {c: arr(r) for c, r in self._global.items()},
            {c: arr(r) for c, r in self._track.items()},
            global_frames,
            camera_frames,
            wall_s,
            self.events,
        )


def run_pipeline(
    dataset: Dataset,
    settings: Settings,
    max_frames: int | None = None,
    on_frame: Callable[[int], None] | None = None,
    on_result: Callable[[GlobalFrame, FrameResult, FrameProcessor], None] | None = None,
) -> PipelineOutput:
    """Every global frame of the dataset through `FrameProcessor`, in order, unpaced (``on_result`` sees each
    frame with what the models made of it and the processor that made it, e.g. to record the identity layer's
    inputs as that processor would describe them)."""
    from app.models.registry import build_detector, build_embedder, build_tracker_embedder
    from app.services.crop_photometry import build_crop_photometry
    from app.services.detection_regions import RegionPlanner
    from app.services.detector_scale import DetectorScale
    from app.services.frame_processor import FrameProcessor
    from app.services.homography import HomographyService
    from app.services.motion_gate import MotionGate
    from app.services.reid import IdentityRegistry
    from app.services.still_objects import StillObjects
    from app.services.tracking import CameraTrackerFactory
    from app.services.video_data_manager import SynchronizedReader, VideoDataManagerService

    env = dataset.env
    detector = build_detector(settings)
    embedder = build_embedder(settings)
    detector.warmup()
    embedder.warmup()
    factory = CameraTrackerFactory(settings)
    processor = FrameProcessor(
        detector=detector,
        embedder=embedder,
        trackers={cid: factory.create(cid, cam.fps or 10.0) for cid, cam in env.cameras.items()},
        homography=HomographyService(env, settings.map_cut_box_aspect),
        identities=IdentityRegistry.from_settings(settings, embedder.dim, env),
        embed_every_n=settings.reid_embed_every_n,
        embed_first_n=settings.reid_embed_first_n,
        motion_gate=MotionGate.from_settings(settings),
        regions=RegionPlanner.from_settings(settings),
        still=StillObjects.from_settings(settings),
        scale=DetectorScale.from_settings(settings),
        tracker_embedder=build_tracker_embedder(settings),
        photometry=build_crop_photometry(settings.crop_photometry, settings.crop_levels_clip_pct),
    )
    collect = OutputCollector(list(env.cameras), dataset.first_frame)
    sources = VideoDataManagerService(settings).open(list(env.cameras.values()))
    reader = SynchronizedReader(sources, read_ahead=settings.read_ahead_frames)
    reader.start()
    n_global = n_cam = 0
    t0 = time.perf_counter()
    try:
        while max_frames is None or n_global < max_frames:
            gf = reader.get()
            if gf is None:
                break
            result = processor.process(gf)
            if on_result is not None:
                on_result(gf, result, processor)
            for cam in result.cameras:
                for t in cam.tracks:
                    collect.box(cam.camera_id, cam.frame_index, t.global_id, t.track_id, t.bbox_xyxy)
            for ev in result.identity_events:
                collect.event(ev.kind.value)
            n_global += 1
            n_cam += len(result.cameras)
            if on_frame is not None:
                on_frame(n_global)
    finally:
        reader.close()
    out = collect.output(n_global, n_cam, time.perf_counter() - t0)
    if processor.scale is not None:
        out.detector_input = {c: s for c in env.cameras if (s := processor.scale.size(c)) is not None}
        out.detector_model_input = processor.scale.input_size
    return out


# -- scoring and the report ---------------------------------------------------------------------------------
@dataclass(slots=True)
class TrackingReport:
    dataset: str
    cameras: list[str]
    scored_frames: tuple[int, int]
    per_camera: dict[str, MotScores]
    """Scored with the product's global ids."""
    per_camera_tracker_ids: dict[str, MotScores]
    """Scored with each camera tracker's own ids (what the identity registry starts from)."""
    all_cameras: MotScores
    """Every camera's boxes pooled, one identity space: the cross-camera scores."""
    consistency: IdentityConsistency
    ceiling: dict[str, MotScores]
    """Per camera and ``all`` (pooled): the scores these boxes would get with perfect ids (`with_true_ids`)."""
    track_ceiling: MotScores
    """All cameras pooled: the best any joining of the camera trackers' tracks could do (`with_majority_ids`)."""
    reentries: ReentryStats = field(default_factory=lambda: ReentryStats(0, 0, 0))
    run: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: what a user checks first."""
        a, c, r = self.all_cameras, self.consistency, self.reentries
        ratio = a.pred_ids / a.gt_ids if a.gt_ids else 0.0
        merged = self.run.get("identity_events", {}).get("merged", 0)
        return (
            f"{self.dataset}: global IDF1 {100 * a.idf1:.1f}, purity {100 * c.purity:.1f}, "
            f"{a.pred_ids} global ids for {a.gt_ids} people ({ratio:.2f}x), "
            f"re-entries kept {r.kept} of {r.scored} (of {r.gt_reentries} in the ground truth), "
            f"late merges {merged}; {identities_line(self.run)}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "cameras": self.cameras,
            "scored_frames": list(self.scored_frames),
            "per_camera": {c: asdict(s) for c, s in self.per_camera.items()},
            "per_camera_tracker_ids": {c: asdict(s) for c, s in self.per_camera_tracker_ids.items()},
            "cross_camera": {
                "global_idf1": self.all_cameras.idf1,
                "global_idp": self.all_cameras.idp,
                "global_idr": self.all_cameras.idr,
                "global_hota": self.all_cameras.hota,
                "global_assa": self.all_cameras.assa,
                "purity": self.consistency.purity,
                "fragmentation": self.consistency.fragmentation,
                "max_fragmentation": self.consistency.max_fragmentation,
                "covered_boxes": self.consistency.covered_boxes,
                "gt_persons": self.all_cameras.gt_ids,
                "global_ids": self.all_cameras.pred_ids,
                "per_person": {str(k): v for k, v in self.consistency.per_person.items()},
            },
            "ceiling_with_true_ids": {c: asdict(s) for c, s in self.ceiling.items()},
            "ceiling_joining_tracks": asdict(self.track_ceiling),
            "reentries": asdict(self.reentries),
            "summary": self.summary(),
            "run": self.run,
        }

    def table(self) -> str:
        def pct(v: float) -> str:
            return f"{100 * v:6.1f}"

        head = f"{'camera':<10}{'MOTA':>7}{'IDF1':>7}{'HOTA':>7}{'DetA':>7}{'AssA':>7}{'IDsw':>6}"
        head += f"{'Prec':>7}{'Rec':>7}{'IDF1trk':>9}{'GT':>7}{'ids':>5}"
        lines = [f"{self.dataset}: frames {self.scored_frames[0]}-{self.scored_frames[1]} scored", head]
        for cid, s in self.per_camera.items():
            trk = self.per_camera_tracker_ids[cid]
            lines.append(
                f"{cid:<10}{pct(s.mota):>7}{pct(s.idf1):>7}{pct(s.hota):>7}{pct(s.deta):>7}{pct(s.assa):>7}"
                f"{s.id_switches:>6}{pct(s.precision):>7}{pct(s.recall):>7}{pct(trk.idf1):>9}{s.gt_boxes:>7}"
                f"{s.pred_ids:>5}"
            )
        a, c = self.all_cameras, self.consistency
        lines.append(
            f"cross-camera: global IDF1 {pct(a.idf1).strip()}  (IDP {pct(a.idp).strip()}, IDR {pct(a.idr).strip()})"
            f"  HOTA {pct(a.hota).strip()}  AssA {pct(a.assa).strip()}  purity {pct(c.purity).strip()}"
            f"  fragmentation {c.fragmentation:.2f} (max {c.max_fragmentation})"
            f"  global ids {a.pred_ids} for {a.gt_ids} persons"
        )
        ceil = self.ceiling["all"]
        lines.append(
            f"ceilings: joining whole tracks perfectly, global IDF1 {pct(self.track_ceiling.idf1).strip()};"
            f" these boxes with perfect ids, global IDF1 {pct(ceil.idf1).strip()}, per camera MOTA / IDF1 "
            + ", ".join(
                f"{c} {pct(self.ceiling[c].mota).strip()} / {pct(self.ceiling[c].idf1).strip()}" for c in self.cameras
            )
        )
        lines.append(self.summary())
        if self.run:
            lines.append(run_line(self.run))
        return "\n".join(lines)


def run_line(r: dict[str, Any]) -> str:
    """How the run went: frames, time, and the cameras whose detector input was shrunk or enlarged."""
    sizes = r.get("detector_input") or {}
    base = r.get("detector_model_input") or float("inf")  # reports from before enlarging existed: all shrunk
    shrunk = ", ".join(f"{c} {s}" for c, s in sizes.items() if s < base)
    grown = ", ".join(f"{c} {s}" for c, s in sizes.items() if s > base)
    return (
        f"run: {r.get('global_frames')} global frames, {r.get('camera_frames')} camera frames in "
        f"{r.get('wall_s', 0):.1f} s ({r.get('camera_fps', 0):.1f} camera-frames/s)"
        + (f"; detector input shrunk: {shrunk}" if shrunk else "")
        + (f"; detector input enlarged: {grown}" if grown else "")
    )


def identities_line(run: dict[str, Any]) -> str:
    """Identities over the whole processed video (labelled or not): created, later merged, people counted."""
    ev = run.get("identity_events", {})
    created, merged = int(ev.get("created", 0)), int(ev.get("merged", 0))
    frames = run.get("global_frames", 0)
    return f"over all {frames} frames {created} ids created, {merged} merged: {_counted(run)} people counted"


@dataclass(slots=True)
class UnlabelledReport:
    """A run over a dataset without ground truth: what can be said is how many people it counted."""

    dataset: str
    cameras: list[str]
    run: dict[str, Any]

    def summary(self) -> str:
        return f"{self.dataset}: no ground truth; {identities_line(self.run)}"

    def table(self) -> str:
        return f"{self.summary()}\n{run_line(self.run)}"

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "cameras": self.cameras, "summary": self.summary(), "run": self.run}


TRACK_ID_STRIDE = 10_000_000
REENTRY_GAP_S = 2.0
"""A person out of every camera's ground truth for longer than this has left; their return is a re-entry."""


def summary_table(reports: list[TrackingReport | UnlabelledReport]) -> str:
    """One row per dataset (``spoton eval DIR [DIR ...]``); unlabelled ones are listed after the table."""
    head = (
        f"{'dataset':<18}{'frames':>9}{'people':>8}{'ids':>6}{'ids/p':>7}{'gIDF1':>7}{'purity':>8}"
        f"{'MOTA':>7}{'IDF1':>7}{'re-entries kept':>17}{'counted':>9}"
    )
    lines = [head]
    for r in reports:
        if isinstance(r, UnlabelledReport):
            continue
        a, c, e = r.all_cameras, r.consistency, r.reentries
        mota = float(np.mean([s.mota for s in r.per_camera.values()]))
        idf1 = float(np.mean([s.idf1 for s in r.per_camera.values()]))
        frames = f"{r.scored_frames[0]}-{r.scored_frames[1]}"
        lines.append(
            f"{r.dataset:<18}{frames:>9}{a.gt_ids:>8}{a.pred_ids:>6}{a.pred_ids / max(a.gt_ids, 1):>7.2f}"
            f"{100 * a.idf1:>7.1f}{100 * c.purity:>8.1f}{100 * mota:>7.1f}{100 * idf1:>7.1f}"
            f"{f'{e.kept}/{e.scored} ({e.gt_reentries})':>17}{_counted(r.run):>9}"
        )
    lines += [r.summary() for r in reports if isinstance(r, UnlabelledReport)]
    return "\n".join(lines)


def _counted(run: dict[str, Any]) -> int:
    ev = run.get("identity_events", {})
    return int(ev.get("created", 0)) - int(ev.get("merged", 0))


def _offset_ids(rows: MotRows, offset: int) -> MotRows:
    out = rows.copy()
    out[:, 1] += offset
    return out


def _run_facts(out: PipelineOutput) -> dict[str, Any]:
    fps = out.camera_frames / out.wall_s if out.wall_s > 0 else 0.0
    return {
        "global_frames": out.global_frames,
        "camera_frames": out.camera_frames,
        "wall_s": round(out.wall_s, 2),
        "camera_fps": round(fps, 2),
        "identity_events": out.identity_events,
        "detector_input": out.detector_input,
        "detector_model_input": out.detector_model_input,
    }


def score(
    dataset: Dataset, out: PipelineOutput, last_frame: int | None = None
) -> TrackingReport | UnlabelledReport:
    """Scores of the ground-truth frame range (cut at `last_frame` when the run stopped early)."""
    if not dataset.gt:
        return UnlabelledReport(dataset.env.id, list(dataset.env.cameras), _run_facts(out))
    first, last = dataset.scored_frames
    if last_frame is not None:
        last = min(last, last_frame)
    cams = list(dataset.env.cameras)
    seq_g: dict[str, Sequence] = {}
    per_cam: dict[str, MotScores] = {}
    per_cam_trk: dict[str, MotScores] = {}
    seq_t: list[Sequence] = []
    for i, cid in enumerate(cams):
        seq_g[cid] = frames_to_sequence(dataset.gt[cid], out.global_rows[cid], first, last)
        per_cam[cid] = mot_scores(seq_g[cid])
        tracks = frames_to_sequence(dataset.gt[cid], out.track_rows[cid], first, last)
        per_cam_trk[cid] = mot_scores(tracks)
        # track ids are per camera: make them distinct before pooling
        seq_t.append(Sequence(tracks.gt, [_offset_ids(p, (i + 1) * TRACK_ID_STRIDE) for p in tracks.pred]))
    pooled = pool(list(seq_g.values()))
    ceiling = {cid: mot_scores(with_true_ids(seq)) for cid, seq in seq_g.items()}
    ceiling["all"] = mot_scores(with_true_ids(pooled))
    video_fps = next((c.fps for c in dataset.env.cameras.values() if c.fps), 7.0)
    reentries = reentry_stats(
        list(seq_g.values()), gap_frames=round(REENTRY_GAP_S * video_fps), window_frames=round(2.0 * video_fps)
    )
    run = _run_facts(out)
    return TrackingReport(
        dataset.env.id,
        cams,
        (first, last),
        per_cam,
        per_cam_trk,
        mot_scores(pooled),
        identity_consistency(pooled),
        ceiling,
        mot_scores(with_majority_ids(pool(seq_t))),
        reentries,
        run,
    )


def evaluate(
    directory: Path, settings: Settings, max_frames: int | None = None, on_frame: Callable[[int], None] | None = None
) -> TrackingReport | UnlabelledReport:
    """Load the dataset, run the pipeline over it and score the ground-truth frames (count identities only,
    when it has no ground truth)."""
    dataset = load_dataset(directory)
    out = run_pipeline(dataset, settings, max_frames=max_frames, on_frame=on_frame)
    last = None if max_frames is None else dataset.first_frame + max_frames - 1
    report = score(dataset, out, last_frame=last)
    report.run["settings"] = {
        k: v for k, v in settings.model_dump(mode="json").items() if k.startswith(("reid_", "tracker_", "detector"))
    } | {"embedder": settings.embedder}
    return report
