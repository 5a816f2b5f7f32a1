"""Tsai camera model of PETS2009 S2.L1 View_001, the camera behind the demo video.

The numbers are the published Tsai calibration of View_001 (``View_001.xml`` of the PETS2009 benchmark, as
redistributed by OpenTraj), copied in so the product never needs the calibration file at run time.

Tsai's model, in the order a world point travels:

1. camera coordinates ``Xc = R · Xw + T`` (``T`` in mm), ``R = Rz(rz) · Ry(ry) · Rx(rx)``;
2. undistorted sensor position ``Xu = f · xc / zc``, ``Yu = f · yc / zc`` (mm);
3. radial distortion ``Xu = Xd · (1 + κ1 · r²)``, ``r² = Xd² + Yd²`` (so undistortion is closed form and
   distortion needs a root);
4. frame-buffer pixels ``xf = sx · Xd / dpx + cx``, ``yf = Yd / dpy + cy``.

"Undistorted pixels" below are step 2 expressed on the same pixel grid as step 4 (same ``cx``, ``cy``, ``sx``,
``dpx``, ``dpy``), so an ideal pinhole camera ``K = [[f·sx/dpx, 0, cx], [0, f/dpy, cy], [0, 0, 1]]`` maps the
ground plane (z = 0) to them by a single homography. The lens distortion matters here: it moves foot points by
up to ~10 px, i.e. ~0.45 m on the ground, which a plain homography on raw pixels cannot absorb.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TsaiCamera:
    """A Tsai-calibrated camera with one radial distortion coefficient (lengths in mm, angles in radians)."""

    width: int
    height: int
    ncx: float
    nfx: float
    dx: float
    dy: float
    dpx: float
    dpy: float
    focal: float
    kappa1: float
    cx: float
    cy: float
    sx: float
    tx: float
    ty: float
    tz: float
    rx: float
    ry: float
    rz: float

    @property
    def rotation(self) -> FloatArray:
        """World → camera rotation, ``Rz(rz) @ Ry(ry) @ Rx(rx)`` as in Tsai's reference code (cal_tran.c)."""
        sa, ca = np.sin(self.rx), np.cos(self.rx)
        sb, cb = np.sin(self.ry), np.cos(self.ry)
        sg, cg = np.sin(self.rz), np.cos(self.rz)
        return np.array(
            [
                [cb * cg, cg * sa * sb - ca * sg, sg * sa + ca * cg * sb],
                [cb * sg, sg * sa * sb + ca * cg, ca * sg * sb - cg * sa],
                [-sb, cb * sa, ca * cb],
            ],
            dtype=np.float64,
        )

    @property
    def translation_m(self) -> FloatArray:
        return np.array([self.tx, self.ty, self.tz], dtype=np.float64) / 1000.0

    @property
    def centre_m(self) -> FloatArray:
        """Camera centre in world metres (``-Rᵀ T``)."""
        return -self.rotation.T @ self.translation_m

    @property
    def intrinsic_matrix(self) -> FloatArray:
        """Pinhole matrix of the undistorted pixel grid."""
        return np.array(
            [
                [self.focal * self.sx / self.dpx, 0.0, self.cx],
                [0.0, self.focal / self.dpy, self.cy],
                [0.0, 0.0, 1.0],
            ],
            dtype=np.float64,
        )

    def world_to_image_homography_m(self) -> FloatArray:
        """Ground plane (X, Y metres, z = 0) → undistorted pixels."""
        r = self.rotation
        h = self.intrinsic_matrix @ np.column_stack([r[:, 0], r[:, 1], self.translation_m])
        return h / h[2, 2]

    def image_to_world_homography_m(self) -> FloatArray:
        """Undistorted pixels → ground plane (X, Y metres)."""
        h = np.linalg.inv(self.world_to_image_homography_m())
        return h / h[2, 2]

    def _to_sensor(self, px: FloatArray) -> tuple[FloatArray, FloatArray]:
        return self.dpx * (px[..., 0] - self.cx) / self.sx, self.dpy * (px[..., 1] - self.cy)

    def _to_pixels(self, x: FloatArray, y: FloatArray) -> FloatArray:
        return np.stack([self.sx * x / self.dpx + self.cx, y / self.dpy + self.cy], axis=-1)

    def undistort_points(self, points: npt.ArrayLike) -> FloatArray:
        """Raw (distorted) pixels → undistorted pixels, shape ``(..., 2)``; closed form in Tsai's model."""
        px = np.asarray(points, dtype=np.float64)
        xd, yd = self._to_sensor(px)
        factor = 1.0 + self.kappa1 * (xd * xd + yd * yd)
        return self._to_pixels(xd * factor, yd * factor)

    def distort_points(self, points: npt.ArrayLike, iterations: int = 8) -> FloatArray:
        """Undistorted pixels → raw pixels, shape ``(..., 2)``; needed to sample the raw frame (remap).

        Solves ``κ1·rd³ + rd − ru = 0`` for the distorted radius by Newton's method (monotonic for κ1 ≥ 0, and
        for the small negative κ1 of ordinary lenses inside the image), starting at ``rd = ru``.
        """
        px = np.asarray(points, dtype=np.float64)
        xu, yu = self._to_sensor(px)
        ru = np.hypot(xu, yu)
        rd = ru.copy()
        k = self.kappa1
        for _ in range(iterations):
            rd = rd - (k * rd**3 + rd - ru) / (3.0 * k * rd**2 + 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.where(ru > 0.0, rd / np.where(ru > 0.0, ru, 1.0), 1.0)
        return self._to_pixels(xu * scale, yu * scale)

    def image_to_world_m(self, raw_points: npt.ArrayLike) -> FloatArray:
        """Raw pixels → ground plane metres (undistort, then the homography)."""
        und = self.undistort_points(raw_points)
        return apply_homography(self.image_to_world_homography_m(), und)


def apply_homography(h: npt.ArrayLike, points: npt.ArrayLike) -> FloatArray:
    """Apply a 3×3 homography to points of shape ``(..., 2)``."""
    m = np.asarray(h, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    w = p[..., 0] * m[2, 0] + p[..., 1] * m[2, 1] + m[2, 2]
    x = (p[..., 0] * m[0, 0] + p[..., 1] * m[0, 1] + m[0, 2]) / w
    y = (p[..., 0] * m[1, 0] + p[..., 1] * m[1, 1] + m[1, 2]) / w
    return np.stack([x, y], axis=-1)


VIEW_001 = TsaiCamera(
    # <Geometry>
    width=768,
    height=576,
    ncx=7.9500000000e02,
    nfx=7.5200000000e02,
    dx=4.8500000000e-03,
    dy=4.6500000000e-03,
    dpx=5.1273271277e-03,
    dpy=4.6500000000e-03,
    # <Intrinsic>
    focal=5.5549183034e00,
    kappa1=5.1113043639e-03,
    cx=3.2422149053e02,
    cy=2.8256650051e02,
    sx=1.0937855397e00,
    # <Extrinsic> (translation in mm, rotation in radians)
    tx=8.2873214225e02,
    ty=-3.1754796051e03,
    tz=3.5469298547e04,
    rx=2.0405458695e00,
    ry=-8.9337703748e-01,
    rz=-4.3056124791e-01,
)
"""PETS2009 S2.L1 View_001 (``vtest.avi``): 768×576, camera 7.07 m above the ground."""
