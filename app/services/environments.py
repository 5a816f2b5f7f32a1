"""Environments: a map in metres and the cameras that look at it.

An environment is a folder holding ``environment.json`` plus one video per camera (the dataset format of
``shared/data/README.md`` is read as is), or a single ``*.json`` file whose relative video paths resolve
against the file's folder. Homographies come either as a 3×3 matrix or as image↔map point pairs, which are
solved with ``cv2.findHomography`` at load time; the reprojection error is logged so a bad calibration is
visible at start-up rather than as people walking through walls.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from app.services.environment_file import MAX_PX, CameraFile, EnvironmentFile, MapFile, errors

log = logging.getLogger(__name__)

Matrix3 = npt.NDArray[np.float64]
MAX_FILE_BYTES = 16 * 2**20


class EnvironmentError_(ValueError):
    """An environment file that cannot be used; the message names the file and the field."""


@dataclass(slots=True, frozen=True)
class MapSpec:
    """The metric map: map pixels ↔ metres is ``px = (m - origin_m) * pixels_per_meter``."""

    width_px: int
    height_px: int
    pixels_per_meter: float
    origin_m: tuple[float, float] = (0.0, 0.0)
    image: Path | None = None

    @property
    def width_m(self) -> float:
        return self.width_px / self.pixels_per_meter

    @property
    def height_m(self) -> float:
        return self.height_px / self.pixels_per_meter

    def map_px_to_metres(self) -> Matrix3:
        """3×3 matrix taking map pixels to metres."""
        s = 1.0 / self.pixels_per_meter
        return np.array(
            [[s, 0.0, self.origin_m[0]], [0.0, s, self.origin_m[1]], [0.0, 0.0, 1.0]], dtype=np.float64
        )


@dataclass(slots=True, frozen=True)
class S3Location:
    """A camera's sub-videos under an S3 prefix (``s3://bucket/prefix/``); no bucket: ``SPOTON_S3_BUCKET``."""

    bucket: str | None
    prefix: str
    """Ends with ``/`` (or is empty: the bucket's top level)."""

    def __str__(self) -> str:
        return f"s3://{self.bucket or '$SPOTON_S3_BUCKET'}/{self.prefix}"


@dataclass(slots=True, frozen=True)
class CameraSpec:
    id: str
    name: str
    video: Path | S3Location
    """A video file, a folder of sub-videos (played in order), or an S3 prefix of sub-videos."""
    width: int
    height: int
    fps: float
    image_to_map_px: Matrix3
    """Image pixels → map pixels."""
    reprojection_error_px: float | None = None
    """Mean map-pixel error of the point pairs through the solved homography (None for a given matrix)."""


@dataclass(slots=True)
class EnvironmentSpec:
    id: str
    name: str
    map: MapSpec
    cameras: dict[str, CameraSpec]
    overlaps: set[frozenset[str]] = field(default_factory=set)
    source: Path | None = None
    description: str = ""

    def image_to_metres(self, camera_id: str) -> Matrix3:
        """Image pixels of a camera → map metres."""
        return self.map.map_px_to_metres() @ self.cameras[camera_id].image_to_map_px

    def overlapping(self, a: str, b: str) -> bool:
        return frozenset((a, b)) in self.overlaps


def _matrix(value: Any, where: str) -> Matrix3:
    m = np.asarray(value, dtype=np.float64)
    if m.shape != (3, 3) or not np.all(np.isfinite(m)):
        raise EnvironmentError_(f"{where}: expected a finite 3×3 matrix")
    if abs(np.linalg.det(m)) < 1e-12:
        raise EnvironmentError_(f"{where}: homography is singular")
    return m


def solve_point_pairs(pairs: Any, where: str) -> tuple[Matrix3, float]:
    """Solve image→map from ``[[[u, v], [x, y]], ...]`` and return it with the mean reprojection error."""
    try:
        arr = np.asarray(pairs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EnvironmentError_(f"{where}: point_pairs must be [[[u, v], [x, y]], ...]") from exc
    if arr.ndim != 3 or arr.shape[1:] != (2, 2) or arr.shape[0] < 4:
        raise EnvironmentError_(f"{where}: point_pairs needs at least 4 pairs of [[u, v], [x, y]]")
    src, dst = arr[:, 0, :], arr[:, 1, :]
    if not np.all(np.isfinite(arr)):
        raise EnvironmentError_(f"{where}: point_pairs must be finite numbers")
    try:
        h, _ = cv2.findHomography(src, dst, 0)
    except cv2.error as exc:
        raise EnvironmentError_(f"{where}: point_pairs cannot be solved ({str(exc).strip()[:120]})") from None
    if h is None or not np.all(np.isfinite(h)) or abs(np.linalg.det(h)) < 1e-12:
        raise EnvironmentError_(f"{where}: point_pairs are degenerate (collinear?)")
    proj = cv2.perspectiveTransform(src.reshape(-1, 1, 2), h).reshape(-1, 2)
    err = float(np.linalg.norm(proj - dst, axis=1).mean())
    return np.asarray(h, np.float64), err


def _load_map(m: MapFile, base: Path, where: str) -> MapSpec:
    ppm = m.pixels_per_meter
    if m.width_px is not None and m.height_px is not None:
        w, h = m.width_px, m.height_px
    elif m.width_m is not None and m.height_m is not None:
        w, h = round(m.width_m * ppm), round(m.height_m * ppm)
    else:
        raise EnvironmentError_(f"{where}: map needs width_px/height_px or width_m/height_m")
    if not (0 < w <= MAX_PX and 0 < h <= MAX_PX):
        raise EnvironmentError_(f"{where}: map of {w}×{h} px is out of range (1..{MAX_PX} px a side)")
    image = base / m.image if m.image else None
    return MapSpec(w, h, ppm, m.origin_m, image)


def _s3_location(bucket: Any, prefix: Any, where: str) -> S3Location:
    if bucket is not None and (not isinstance(bucket, str) or not bucket or "/" in bucket):
        raise EnvironmentError_(f"{where}: video: bad S3 bucket name {bucket!r}")
    if not isinstance(prefix, str):
        raise EnvironmentError_(f"{where}: video: s3_prefix must be a string")
    prefix = prefix.strip("/")
    return S3Location(bucket, prefix + "/" if prefix else "")


def _video_location(value: Any, base: Path, where: str) -> Path | S3Location:
    """``"c01.mp4"`` / ``"c01/"`` (local, relative to the file), ``"s3://bucket/prefix/"``, or
    ``{"s3_prefix": "prefix/", "bucket": "name"?}``."""
    if isinstance(value, dict):
        if "s3_prefix" not in value:
            raise EnvironmentError_(f"{where}: video object needs 's3_prefix'")
        return _s3_location(value.get("bucket"), value["s3_prefix"], where)
    if not isinstance(value, str) or not value:
        raise EnvironmentError_(f"{where}: video must be a path, an s3:// URI or {{\"s3_prefix\": ...}}")
    if value.startswith("s3://"):
        bucket, _, prefix = value[len("s3://") :].partition("/")
        return _s3_location(bucket, prefix, where)
    video = Path(value)
    return video if video.is_absolute() else base / video


def _check_ground_under_camera(h: Matrix3, width: int, height: int, where: str) -> None:
    """The bottom of a camera's image is ground near the camera. Through an image→map homography it must
    land on finite map points on one side of the horizon, spread over more than a map pixel; a matrix that
    fails this (transposed, scaled to nothing, meant for another image size) would put people at infinity or
    all on one spot. A mirrored or map→image matrix can still pass: the reprojection error and the viewer's
    map show those."""
    if width <= 0 or height <= 0:
        return
    quarter = 0.75 * height
    quad = np.array(
        [[0.0, quarter, 1.0], [width - 1.0, quarter, 1.0], [width - 1.0, height - 1.0, 1.0], [0.0, height - 1.0, 1.0]]
    )
    p = quad @ h.T
    w = p[:, 2]
    bottom = w[2:]
    eps = 1e-9 * float(np.abs(h[2]).sum() * max(width, height))
    if not (np.all(bottom > eps) or np.all(bottom < -eps)):
        raise EnvironmentError_(
            f"{where}: the homography sends the bottom of the {width}×{height} image beyond the horizon "
            "(a map→image matrix, a transposed one, or one for another image size?)"
        )
    if np.all(np.sign(w) == np.sign(bottom[0])):
        xy = p[:, :2] / w[:, None]
        x, y = xy[:, 0], xy[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
        if not np.isfinite(area) or area < 1.0:
            raise EnvironmentError_(
                f"{where}: the homography squeezes the lower quarter of the image into {area:.3g} map px² "
                "(a transposed matrix, or one scaled to nothing?)"
            )


def _load_camera(c: CameraFile, base: Path, map_spec: MapSpec, where: str) -> CameraSpec:
    cw = f"{where} camera '{c.id}'"
    video = _video_location(c.video, base, cw)
    err: float | None = None
    if c.point_pairs and c.image_to_map_homography is None:
        h, err = solve_point_pairs(c.point_pairs, cw)
    elif c.image_to_map_homography is not None:
        h = _matrix(c.image_to_map_homography, f"{cw} image_to_map_homography")
    elif c.image_to_world_homography_m is not None:
        to_m = _matrix(c.image_to_world_homography_m, f"{cw} image_to_world_homography_m")
        h = np.linalg.inv(map_spec.map_px_to_metres()) @ to_m
    else:
        raise EnvironmentError_(f"{cw}: needs image_to_map_homography or point_pairs")
    if c.point_pairs and err is None:
        _, err = solve_point_pairs(c.point_pairs, cw)
    _check_ground_under_camera(h, c.width, c.height, cw)
    return CameraSpec(
        id=c.id,
        name=c.name or c.id,
        video=video,
        width=c.width,
        height=c.height,
        fps=c.fps,
        image_to_map_px=h,
        reprojection_error_px=err,
    )


def load_environment(path: Path) -> EnvironmentSpec:
    """Read an environment from a folder (``environment.json`` inside) or a ``.json`` file."""
    path = Path(path)
    file = path / "environment.json" if path.is_dir() else path
    if not file.is_file():
        raise EnvironmentError_(f"{path}: no environment file (a .json file, or a folder with environment.json)")
    if file.stat().st_size > MAX_FILE_BYTES:
        raise EnvironmentError_(f"{file}: larger than {MAX_FILE_BYTES // 2**20} MiB: not an environment file")
    try:
        raw = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EnvironmentError_(f"{file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise EnvironmentError_(f"{file}: not valid JSON ({exc})") from None
    except RecursionError:
        raise EnvironmentError_(f"{file}: JSON nested too deeply") from None
    if not isinstance(raw, dict):
        raise EnvironmentError_(f"{file}: expected a JSON object")
    where = str(file)
    try:
        spec = EnvironmentFile.model_validate(raw)
    except ValidationError as exc:
        raise EnvironmentError_(f"{where}: {errors(exc, raw)}") from None
    base = file.parent
    map_spec = _load_map(spec.map, base, where)
    cameras: dict[str, CameraSpec] = {}
    for c in spec.cameras:
        cam = _load_camera(c, base, map_spec, where)
        if cam.id in cameras:
            raise EnvironmentError_(f"{where}: camera id '{cam.id}' appears twice")
        cameras[cam.id] = cam
        if cam.reprojection_error_px is not None:
            log.info(
                "environment %s camera %s: homography reprojection error %.3f map px (%.3f m)",
                spec.id,
                cam.id,
                cam.reprojection_error_px,
                cam.reprojection_error_px / map_spec.pixels_per_meter,
            )
    overlaps: set[frozenset[str]] = set()
    for a, b in spec.overlaps:
        if a not in cameras or b not in cameras:
            raise EnvironmentError_(f"{where}: overlap [{a}, {b}] names an unknown camera")
        overlaps.add(frozenset((a, b)))
    return EnvironmentSpec(
        id=spec.id,
        name=spec.name or spec.id,
        map=map_spec,
        cameras=cameras,
        overlaps=overlaps,
        source=file,
        description=spec.description,
    )


def discover_environments(directory: Path) -> list[Path]:
    """Environment files and dataset folders directly inside ``directory``."""
    if not directory.is_dir():
        return []
    found: list[Path] = []
    for p in sorted(directory.iterdir()):
        if (p.is_dir() and (p / "environment.json").is_file()) or (p.is_file() and p.suffix == ".json"):
            found.append(p)
    return found
