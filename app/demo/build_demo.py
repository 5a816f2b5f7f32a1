"""Build the demo environment: four overlapping cameras derived from PETS2009 S2.L1 View_001.

The product needs a multi-camera scene with real people and an exact map, but only one real camera of
PETS2009 S2.L1 is freely redistributable (``vtest.avi``). So each demo camera is a different quadrilateral of
the *undistorted* View_001 image, warped to 640×480: a perspective warp of an image of a plane is exactly
what another pinhole camera at a different pose would see of that plane, so every derived camera gets an
exact image→ground homography from View_001's Tsai calibration. Each camera also gets its own colour
character (white balance, saturation, gamma, contrast, brightness, vignetting, blur, sensor noise) so that
appearance re-identification across cameras is not trivially pixel-identical.

Each output frame costs one ``cv2.remap`` per camera (view pixel → inverse warp → Tsai distortion → raw
View_001 pixel), so undistortion and warp are a single resampling. Frames are streamed: the video is decoded
once and written to four ``mp4v`` files at the true 7 fps.

Output folder (the dataset format of ``app.services.environments``): ``environment.json``, ``c1.mp4`` …
``c4.mp4``, ``map.png``. The build is atomic (a temporary folder renamed into place) and idempotent
(``build_info`` in ``environment.json`` records the builder version, source checksum and frame limit).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from cv2.typing import MatLike

from app.demo.pets_calibration import VIEW_001, TsaiCamera, apply_homography
from app.demo.video_source import VTEST_TRUE_FPS, sha256_of

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

BUILDER_VERSION = "1"
"""Bump when the output changes (camera table, photometry, map): existing builds are then rebuilt."""
ENVIRONMENT_ID = "demo-pets-4cam"
ENVIRONMENT_NAME = "PETS2009 S2.L1 — four derived cameras (demo)"
VIEW_WIDTH, VIEW_HEIGHT = 640, 480
FPS = VTEST_TRUE_FPS
FOURCC = "mp4v"
MIN_OVERLAP_M2 = 2.0
"""Camera pairs sharing less ground than this (inside the map) are not listed as overlapping."""
POINT_PAIRS = 10
BACKGROUND_SAMPLES = 25
"""Frames sampled (evenly) for the median background of ``map.png``."""
NOISE_PAD = 64


@dataclass(frozen=True, slots=True)
class MapFrame:
    """The metric map: ``map_px = (X_m - origin_m) * pixels_per_meter`` in PETS world metres (no flip)."""

    width_px: int = 600
    height_px: int = 540
    pixels_per_meter: float = 20.0
    origin_m: tuple[float, float] = (-21.0, -18.0)

    def world_to_map(self) -> FloatArray:
        s = self.pixels_per_meter
        ox, oy = self.origin_m
        return np.array([[s, 0.0, -ox * s], [0.0, s, -oy * s], [0.0, 0.0, 1.0]], dtype=np.float64)


MAP = MapFrame()
"""X −21…9 m, Y −18…9 m: all of the walkway and lawn where PETS S2.L1 people walk (−13…7 m, −15…7 m)."""


@dataclass(frozen=True, slots=True)
class Photometry:
    """A camera's colour character, applied after the geometric warp (8-bit BGR)."""

    wb_bgr: tuple[float, float, float]
    saturation: float
    gamma: float
    contrast: float
    brightness: float
    """Offset in units of full scale (0.05 = +13 levels)."""
    vignette: float
    """Relative darkening at the image corners."""
    blur_sigma: float
    noise_sigma: float
    """Gaussian sensor noise, 8-bit levels."""


@dataclass(frozen=True, slots=True)
class DerivedCamera:
    """A demo camera: a quadrilateral of the undistorted View_001 image shown at 640×480.

    The quad is a ``width`` × ``0.75·width`` rectangle around ``centre`` (undistorted View_001 pixels), with
    its top edge scaled by ``1 − keystone`` and bottom edge by ``1 + keystone`` (a steeper or flatter virtual
    camera), sheared by ``shear`` (x += shear·y) and rotated by ``rotation_deg``.
    """

    id: str
    name: str
    centre: tuple[float, float]
    width: float
    rotation_deg: float
    shear: float
    keystone: float
    photometry: Photometry
    seed: int

    def source_quad(self) -> FloatArray:
        """Corners TL, TR, BR, BL in undistorted View_001 pixels."""
        hw, hh = self.width / 2.0, self.width * VIEW_HEIGHT / VIEW_WIDTH / 2.0
        top, bottom = 1.0 - self.keystone, 1.0 + self.keystone
        pts = np.array([[-hw * top, -hh], [hw * top, -hh], [hw * bottom, hh], [-hw * bottom, hh]])
        pts[:, 0] += self.shear * pts[:, 1]
        a = np.deg2rad(self.rotation_deg)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        return np.asarray(pts @ rot.T + np.asarray(self.centre), dtype=np.float64)

    def view_homography(self) -> FloatArray:
        """Undistorted View_001 pixels → this camera's pixels (``H_k``)."""
        dst = np.array([[0, 0], [VIEW_WIDTH, 0], [VIEW_WIDTH, VIEW_HEIGHT], [0, VIEW_HEIGHT]], dtype=np.float32)
        h = cv2.getPerspectiveTransform(self.source_quad().astype(np.float32), dst)
        return np.asarray(h / h[2, 2], dtype=np.float64)

    def image_to_world_m(self, calib: TsaiCamera = VIEW_001) -> FloatArray:
        """This camera's pixels → ground plane metres."""
        h = calib.image_to_world_homography_m() @ np.linalg.inv(self.view_homography())
        return np.asarray(h / h[2, 2], dtype=np.float64)

    def image_to_map(self, calib: TsaiCamera = VIEW_001, map_frame: MapFrame = MAP) -> FloatArray:
        h = map_frame.world_to_map() @ self.image_to_world_m(calib)
        return np.asarray(h / h[2, 2], dtype=np.float64)


CAMERAS: tuple[DerivedCamera, ...] = (
    DerivedCamera(
        id="c1",
        name="lawn-west",
        centre=(240.0, 268.0),
        width=430.0,
        rotation_deg=3.0,
        shear=0.04,
        keystone=0.06,
        photometry=Photometry((0.92, 1.00, 1.07), 1.12, 0.92, 1.06, 0.02, 0.22, 0.7, 2.0),
        seed=101,
    ),
    DerivedCamera(
        id="c2",
        name="road-east",
        centre=(578.0, 205.0),
        width=360.0,
        rotation_deg=-3.0,
        shear=-0.03,
        keystone=-0.05,
        photometry=Photometry((1.08, 1.00, 0.93), 0.92, 1.06, 1.12, -0.04, 0.12, 1.0, 2.4),
        seed=202,
    ),
    DerivedCamera(
        id="c3",
        name="crossing-wide",
        centre=(486.0, 338.0),
        width=505.0,
        rotation_deg=1.5,
        shear=0.02,
        keystone=0.08,
        photometry=Photometry((0.96, 1.05, 0.98), 0.85, 1.10, 0.88, 0.05, 0.25, 1.2, 1.6),
        seed=303,
    ),
    DerivedCamera(
        id="c4",
        name="north-zoom",
        centre=(430.0, 178.0),
        width=320.0,
        rotation_deg=-2.0,
        shear=-0.04,
        keystone=0.06,
        photometry=Photometry((1.00, 0.98, 1.03), 0.72, 0.95, 1.22, 0.0, 0.06, 0.6, 2.6),
        seed=404,
    ),
)


# --- geometry ------------------------------------------------------------------------------------------


def remap_tables(cam: DerivedCamera, calib: TsaiCamera = VIEW_001) -> tuple[MatLike, MatLike]:
    """Fixed-point ``cv2.remap`` tables: view pixel → raw View_001 pixel (inverse warp, then distortion)."""
    u, v = np.meshgrid(np.arange(VIEW_WIDTH, dtype=np.float64), np.arange(VIEW_HEIGHT, dtype=np.float64))
    undistorted = apply_homography(np.linalg.inv(cam.view_homography()), np.stack([u, v], axis=-1))
    raw = calib.distort_points(undistorted).astype(np.float32)
    map1, map2 = cv2.convertMaps(raw[..., 0], raw[..., 1], cv2.CV_16SC2)
    return map1, map2


def map_pixel_grid(map_frame: MapFrame = MAP) -> FloatArray:
    """World metres at every map pixel, shape ``(H, W, 2)``."""
    x, y = np.meshgrid(
        np.arange(map_frame.width_px, dtype=np.float64), np.arange(map_frame.height_px, dtype=np.float64)
    )
    s = 1.0 / map_frame.pixels_per_meter
    return np.stack([x * s + map_frame.origin_m[0], y * s + map_frame.origin_m[1]], axis=-1)


def ground_footprint(
    cam: DerivedCamera, calib: TsaiCamera = VIEW_001, map_frame: MapFrame = MAP
) -> npt.NDArray[np.bool_]:
    """Map pixels whose ground point this camera sees (rasterised through world → view)."""
    world = map_pixel_grid(map_frame)
    h = cam.view_homography() @ calib.world_to_image_homography_m()
    w = world[..., 0] * h[2, 0] + world[..., 1] * h[2, 1] + h[2, 2]
    zc = world[..., 0] * calib.rotation[2, 0] + world[..., 1] * calib.rotation[2, 1] + calib.translation_m[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        view = apply_homography(h, world)
    inside = (view[..., 0] >= 0) & (view[..., 0] < VIEW_WIDTH) & (view[..., 1] >= 0) & (view[..., 1] < VIEW_HEIGHT)
    return np.asarray(inside & (w > 0) & (zc > 0), dtype=np.bool_)


def point_pairs(
    cam: DerivedCamera, calib: TsaiCamera = VIEW_001, map_frame: MapFrame = MAP, count: int = POINT_PAIRS
) -> list[list[list[float]]]:
    """``count`` view↔map correspondences spread over the camera's ground inside the map.

    Candidates on a grid of view pixels; farthest-point sampling keeps them spread, so that
    ``cv2.findHomography`` on them is well conditioned and reproduces the homography.
    """
    to_map = cam.image_to_map(calib, map_frame)
    us = np.linspace(24, VIEW_WIDTH - 24, 9)
    vs = np.linspace(24, VIEW_HEIGHT - 24, 7)
    grid = np.array([[u, v] for v in vs for u in us], dtype=np.float64)
    mp = apply_homography(to_map, grid)
    ok = (mp[:, 0] >= 0) & (mp[:, 0] < map_frame.width_px) & (mp[:, 1] >= 0) & (mp[:, 1] < map_frame.height_px)
    cand, cand_map = grid[ok], mp[ok]
    if len(cand) < 4:
        raise RuntimeError(f"camera {cam.id}: fewer than 4 of its ground points fall inside the map")
    chosen = [int(np.argmin(cand[:, 0] + cand[:, 1]))]
    dist = np.linalg.norm(cand - cand[chosen[0]], axis=1)
    while len(chosen) < min(count, len(cand)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(cand - cand[nxt], axis=1))
    return [
        [[float(cand[i, 0]), float(cand[i, 1])], [round(float(cand_map[i, 0]), 4), round(float(cand_map[i, 1]), 4)]]
        for i in chosen
    ]


# --- photometry ----------------------------------------------------------------------------------------


class _Look:
    """Applies one camera's photometry to a frame; per-frame noise is seeded by (camera seed, frame index)."""

    def __init__(self, p: Photometry, seed: int) -> None:
        self.p = p
        self.seed = seed
        levels = np.arange(256, dtype=np.float64) / 255.0
        tables = []
        for gain in p.wb_bgr:
            x = np.clip(levels * gain, 0.0, 1.0) ** p.gamma
            x = (x - 0.5) * p.contrast + 0.5 + p.brightness
            tables.append(np.clip(np.rint(x * 255.0), 0, 255))
        self.lut = np.stack(tables, axis=-1).astype(np.uint8).reshape(1, 256, 3)
        yy, xx = np.mgrid[0:VIEW_HEIGHT, 0:VIEW_WIDTH].astype(np.float64)
        r2 = ((xx - VIEW_WIDTH / 2) / (VIEW_WIDTH / 2)) ** 2 + ((yy - VIEW_HEIGHT / 2) / (VIEW_HEIGHT / 2)) ** 2
        fall = 1.0 - p.vignette * (r2 / 2.0)  # 1 at the centre, 1 - vignette in the corners
        self.vignette = np.repeat(np.rint(fall * 255.0)[..., None], 3, axis=2).astype(np.uint8)
        # Fresh Gaussian noise per frame costs more than the rest of the look; a seeded bank a little larger
        # than the frame, read at a per-frame random offset, looks the same and is nearly free.
        bank = np.random.default_rng(seed).standard_normal((VIEW_HEIGHT + NOISE_PAD, VIEW_WIDTH + NOISE_PAD, 3))
        self.noise = np.rint(bank * p.noise_sigma).astype(np.int16)

    def apply(self, img: MatLike, frame_index: int) -> MatLike:
        p = self.p
        if p.saturation != 1.0:
            gray = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
            img = cv2.addWeighted(img, p.saturation, gray, 1.0 - p.saturation, 0.0)
        img = cv2.LUT(img, self.lut)
        if p.vignette:
            img = cv2.multiply(img, self.vignette, scale=1.0 / 255.0)
        if p.blur_sigma > 0:
            img = cv2.GaussianBlur(img, (0, 0), p.blur_sigma)
        if p.noise_sigma > 0:
            dy, dx = np.random.default_rng((self.seed, frame_index)).integers(0, NOISE_PAD + 1, size=2)
            noise = self.noise[dy : dy + VIEW_HEIGHT, dx : dx + VIEW_WIDTH]
            img = cv2.add(img, noise, dtype=cv2.CV_8U)
        return img


# --- map picture ---------------------------------------------------------------------------------------


def render_map(background: MatLike, calib: TsaiCamera = VIEW_001, map_frame: MapFrame = MAP) -> MatLike:
    """Top-down warp of the (raw) background onto the map, dark where View_001 sees no ground, 1 m grid."""
    world = map_pixel_grid(map_frame)
    und = apply_homography(calib.world_to_image_homography_m(), world)
    zc = world[..., 0] * calib.rotation[2, 0] + world[..., 1] * calib.rotation[2, 1] + calib.translation_m[2]
    raw = calib.distort_points(und)
    valid = (zc > 0) & (raw[..., 0] >= 0) & (raw[..., 0] <= calib.width - 1)
    valid &= (raw[..., 1] >= 0) & (raw[..., 1] <= calib.height - 1)
    raw[~valid] = -10.0
    img = cv2.remap(
        background,
        raw[..., 0].astype(np.float32),
        raw[..., 1].astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    img[~valid] = 32
    s = map_frame.pixels_per_meter
    for axis, size, origin in (
        (1, map_frame.width_px, map_frame.origin_m[0]),
        (0, map_frame.height_px, map_frame.origin_m[1]),
    ):
        first = int(np.ceil(origin))
        for metre in range(first, int(np.floor(origin + size / s)) + 1):
            px = round((metre - origin) * s)
            if not 0 <= px < size:
                continue
            major = metre % 5 == 0
            colour = np.array((235, 235, 235) if major else (150, 150, 150), dtype=np.float64)
            alpha = 0.8 if major else 0.45
            line = img[:, px] if axis == 1 else img[px, :]
            line[:] = (line * (1 - alpha) + colour * alpha).astype(np.uint8)
    return np.asarray(img, dtype=np.uint8)


# --- build ---------------------------------------------------------------------------------------------


def _up_to_date(env_file: Path, source_sha: str, max_frames: int | None) -> bool:
    try:
        raw = json.loads(env_file.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    info = raw.get("build_info") or {}
    if (
        info.get("builder_version") != BUILDER_VERSION
        or info.get("source_sha256") != source_sha
        or info.get("max_frames") != max_frames
    ):
        return False
    return all((env_file.parent / str(c.get("video", ""))).is_file() for c in raw.get("cameras", []))


def build_demo_environment(video: Path, out_dir: Path, *, max_frames: int | None = None, force: bool = False) -> Path:
    """Write the demo environment for ``video`` (PETS2009 S2.L1 View_001) to ``out_dir``; return ``out_dir``.

    A no-op when ``out_dir`` already holds a build of this builder version from the same source and frame
    limit, unless ``force``.
    """
    video, out_dir = Path(video), Path(out_dir)
    if not video.is_file():
        raise FileNotFoundError(f"demo source video not found: {video}")
    if max_frames is not None and max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    source_sha = sha256_of(video)
    env_file = out_dir / "environment.json"
    if not force and _up_to_date(env_file, source_sha, max_frames):
        log.info("demo environment %s is up to date (builder %s)", out_dir, BUILDER_VERSION)
        return out_dir

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _build_into(video, tmp, source_sha, max_frames)
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _build_into(video: Path, out: Path, source_sha: str, max_frames: int | None) -> None:
    t0 = time.monotonic()
    calib = VIEW_001
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise RuntimeError(f"{video}: OpenCV cannot open this video")
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    expected = min(declared, max_frames) if max_frames else declared
    log.info("building demo environment from %s (%s frames) into %s", video, expected or "?", out)

    tables = [remap_tables(cam, calib) for cam in CAMERAS]
    looks = [_Look(cam.photometry, cam.seed) for cam in CAMERAS]
    fourcc = cv2.VideoWriter.fourcc(*FOURCC)
    writers = []
    for cam in CAMERAS:
        w = cv2.VideoWriter(str(out / f"{cam.id}.mp4"), fourcc, FPS, (VIEW_WIDTH, VIEW_HEIGHT))
        if not w.isOpened():
            raise RuntimeError(f"OpenCV cannot write {FOURCC} .mp4 files (camera {cam.id})")
        writers.append(w)
    sample_every = max(1, (expected or 1) // BACKGROUND_SAMPLES)
    samples: list[MatLike] = []

    def render(k: int, frame: MatLike, index: int) -> None:
        view = cv2.remap(frame, tables[k][0], tables[k][1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        writers[k].write(looks[k].apply(view, index))

    n = 0
    last_log = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=min(len(CAMERAS), max(1, os.cpu_count() or 1))) as pool:
            while max_frames is None or n < max_frames:
                ok, frame = cap.read()
                if not ok or frame is None:
                    break
                if frame.shape[:2] != (calib.height, calib.width):
                    raise RuntimeError(f"{video}: frame {n + 1} is {frame.shape[1]}×{frame.shape[0]}, expected 768×576")
                if n % sample_every == 0 and len(samples) < BACKGROUND_SAMPLES:
                    samples.append(frame.copy())
                for fut in [pool.submit(render, k, frame, n) for k in range(len(CAMERAS))]:
                    fut.result()
                n += 1
                if time.monotonic() - last_log > 5.0:
                    last_log = time.monotonic()
                    log.info("demo build: %d/%s frames (%.0f s)", n, expected or "?", last_log - t0)
    finally:
        cap.release()
        for w in writers:
            w.release()
    if n == 0:
        raise RuntimeError(f"{video}: no frames could be decoded")
    for cam in CAMERAS:
        check = cv2.VideoCapture(str(out / f"{cam.id}.mp4"))
        written = int(check.get(cv2.CAP_PROP_FRAME_COUNT))
        check.release()
        if written != n:
            raise RuntimeError(f"camera {cam.id}: wrote {n} frames but the file reports {written}")
    log.info("demo build: %d frames × %d cameras rendered in %.1f s", n, len(CAMERAS), time.monotonic() - t0)

    background = np.median(np.stack(samples), axis=0).astype(np.uint8)
    del samples
    cv2.imwrite(str(out / "map.png"), render_map(background, calib, MAP))

    footprints = {cam.id: ground_footprint(cam, calib, MAP) for cam in CAMERAS}
    px_area = 1.0 / MAP.pixels_per_meter**2
    overlaps: list[list[str]] = []
    details: list[dict[str, Any]] = []
    for i, a in enumerate(CAMERAS):
        for b in CAMERAS[i + 1 :]:
            shared = float(np.count_nonzero(footprints[a.id] & footprints[b.id])) * px_area
            details.append({"cameras": [a.id, b.id], "shared_ground_m2": round(shared, 1)})
            if shared >= MIN_OVERLAP_M2:
                overlaps.append([a.id, b.id])

    env = {
        "id": ENVIRONMENT_ID,
        "name": ENVIRONMENT_NAME,
        "description": (
            "Demo: four overlapping cameras derived by exact perspective warps of the undistorted PETS2009 "
            "S2.L1 View_001 video (University of Reading, PETS 2009), each with its own photometry. "
            "Map and homographies in PETS world metres."
        ),
        "fps": FPS,
        "num_frames": n,
        "first_frame": 1,
        "map": {
            "width_px": MAP.width_px,
            "height_px": MAP.height_px,
            "pixels_per_meter": MAP.pixels_per_meter,
            "origin_m": list(MAP.origin_m),
            "convention": (
                "map_x = (X_m - origin_m[0]) * pixels_per_meter, map_y = (Y_m - origin_m[1]) * pixels_per_meter; "
                "X_m, Y_m = PETS2009 world ground-plane metres (no axis flip)"
            ),
            "world_to_map": MAP.world_to_map().tolist(),
            "image": "map.png",
        },
        "cameras": [
            {
                "id": cam.id,
                "name": cam.name,
                "video": f"{cam.id}.mp4",
                "width": VIEW_WIDTH,
                "height": VIEW_HEIGHT,
                "fps": FPS,
                "num_frames": n,
                "codec_fourcc": FOURCC,
                "image_to_map_homography": cam.image_to_map(calib, MAP).tolist(),
                "image_to_world_homography_m": cam.image_to_world_m(calib).tolist(),
                "point_pairs": point_pairs(cam, calib, MAP),
                "ground_area_in_map_m2": round(float(np.count_nonzero(footprints[cam.id])) * px_area, 1),
                "source": {
                    "view001_undistorted_quad_px": np.round(cam.source_quad(), 3).tolist(),
                    "view001_undistorted_to_view_homography": cam.view_homography().tolist(),
                    "centre": list(cam.centre),
                    "width": cam.width,
                    "rotation_deg": cam.rotation_deg,
                    "shear": cam.shear,
                    "keystone": cam.keystone,
                    "photometry": asdict(cam.photometry),
                },
            }
            for cam in CAMERAS
        ],
        "overlaps": overlaps,
        "overlap_details": details,
        "build_info": {
            "builder_version": BUILDER_VERSION,
            "source_sha256": source_sha,
            "source_name": video.name,
            "max_frames": max_frames,
            "build_seconds": round(time.monotonic() - t0, 2),
        },
    }
    (out / "environment.json").write_text(json.dumps(env, indent=1))
    log.info("demo environment written (%d frames, overlaps %s) in %.1f s", n, overlaps, time.monotonic() - t0)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m app.demo.build_demo [--video PATH] [--out DIR] [--max-frames N] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m app.demo.build_demo", description="Build the 4-camera PETS2009 demo environment."
    )
    parser.add_argument("--video", type=Path, help="vtest.avi (default: SPOTON_DEMO_VIDEO, cache or opencv-doc)")
    parser.add_argument("--out", type=Path, help="output folder (default: <data_dir>/demo/environment)")
    parser.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from app.core.config import get_settings
    from app.demo.video_source import DemoVideoError, obtain_demo_video

    settings = get_settings()
    try:
        video = args.video if args.video is not None else obtain_demo_video(settings)
        out = args.out if args.out is not None else Path(settings.data_dir) / "demo" / "environment"
        t0 = time.monotonic()
        result = build_demo_environment(video, out, max_frames=args.max_frames, force=args.force)
    except (DemoVideoError, FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{result} ({time.monotonic() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
