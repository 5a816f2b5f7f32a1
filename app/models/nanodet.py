"""NanoDet person detector on the CPU with onnxruntime (the default detection strategy).

The ONNX file (``app/assets/nanodet.onnx``, made by ``scripts/convert_nanodet.py``) takes a batch of BGR,
mean/std-normalised NCHW tiles and returns, per stride 8/16/32, sigmoid class scores and GFL box distributions.
A tile is scaled so that its longer side is 416 px (the training size) and padded only up to the next multiple of
32, not to a 416×416 square: a 4:3 frame runs as 416×320, a quarter fewer pixels for the same people (a model file
with a fixed input size still gets the square). Frames wider than about 4:3 are cut into two overlapping
near-square tiles, because squeezing a 16:9 frame into 416 px leaves distant people only a few pixels wide.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from app.models.base import Detections, FloatArray, ImageBGR, ModelInfo, Rect
from app.models.onnx_session import cpu_session
from app.models.tiling import Tile, plan_tiles, tile_count

if TYPE_CHECKING:
    from app.core.config import Settings

DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "assets" / "nanodet.onnx"
DEFAULT_INT8_PATH = Path(__file__).resolve().parents[1] / "assets" / "nanodet-int8.onnx"
"""int8 weights and activations (``scripts/quantize_nanodet.py``, calibrated on the demo video)."""
INPUT_SIZE = 416
STRIDES = (8, 16, 32)
REG_MAX = 10
PERSON = 0
MEAN_BGR = np.array([103.53, 116.28, 123.675], np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], np.float32)
MAX_BATCH = 16
"""Tiles per onnxruntime call: bounds activation memory when many cameras arrive at once."""

TileMode = Literal["auto", "1", "2"]
Precision = Literal["fp32", "int8", "bf16"]
Runtime = Literal["onnxruntime", "openvino"]


def resolve_runtime(runtime: str, precision: str) -> tuple[Runtime, Precision]:
    """What ``auto`` means (measured in docs/performance.md and docs/accuracy.md): fp32 on onnxruntime. The faster
    variants keep per-box accuracy but not the identity scores downstream, so they are opt-in: int8 moved global
    IDF1 by up to 3.7 points, OpenVINO bfloat16 by 1.8 (AMX) and 5.4 (AVX512-BF16 alone). Asking for OpenVINO
    with ``auto`` precision gives bfloat16 where the CPU has it natively."""
    from app.models.openvino_session import native_bf16, openvino_available

    ov = openvino_available()
    if runtime == "auto":
        runtime = "openvino" if precision == "bf16" else "onnxruntime"
    if runtime == "openvino" and not ov:
        raise ValueError("SPOTON_NANODET_RUNTIME=openvino needs the openvino package (pip install openvino)")
    if precision == "auto":
        precision = "bf16" if runtime == "openvino" and native_bf16() else "fp32"
    return cast(Runtime, runtime), cast(Precision, precision)


VARIANTS: tuple[tuple[Runtime, Precision], ...] = (
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
    ("openvino", "bf16"),
    ("openvino", "fp32"),
)
"""Every runtime × precision worth comparing (benchmarks and accuracy reports)."""


def available_variants() -> list[tuple[Runtime, Precision]]:
    """The variants this machine can run: int8 needs its model file, OpenVINO its package, bf16 the CPU."""
    from app.models.openvino_session import native_bf16, openvino_available

    out = []
    for runtime, precision in VARIANTS:
        if precision == "int8" and not DEFAULT_INT8_PATH.is_file():
            continue
        if runtime == "openvino" and (not openvino_available() or (precision == "bf16" and not native_bf16())):
            continue
        out.append((runtime, precision))
    return out


InputShape = tuple[int, int]
"""Network input (height, width) of a tile."""


def _centers(shape: InputShape) -> list[FloatArray]:
    """Anchor points per stride, row-major like the model's cells: NanoDet v0.x uses cell centres."""
    out = []
    for s in STRIDES:
        ys, xs = np.mgrid[0 : shape[0] // s, 0 : shape[1] // s].astype(np.float32)
        out.append(np.stack([(xs.ravel() + 0.5) * s, (ys.ravel() + 0.5) * s], axis=1))
    return out


def input_shape(t: Tile, dynamic: bool, size: int = INPUT_SIZE) -> InputShape:
    """The smallest input holding the scaled tile whose sides are multiples of the largest stride (the model's
    resizes halve and double), or the ``size`` square when the model file fixes its input size."""
    if not dynamic:
        return size, size
    step = STRIDES[-1]

    def side(n: int) -> int:
        return min(size, -(-min(size, round(n * t.scale)) // step) * step)

    return side(t.y1 - t.y0), side(t.x1 - t.x0)


Window = tuple[int, int, int, int]
"""``y0, y1, x0, x1`` in the pixels of a tile's network input, on the grid of the largest stride."""
REGION_MARGIN = 48
"""Input pixels looked at around each region: the network needs context (on PETS frames, windows around
full-look boxes found 64 % of them again within 1 px with 16, 92 % with 32, all with 48)."""
REGION_FULL_SHARE = 0.6
"""Windows covering more than this share of the full input are not worth cutting: the full look runs instead."""


@dataclass(frozen=True, slots=True)
class _Job:
    tile: Tile
    shape: InputShape
    window: Window | None = None
    """Where in the tile's full input this job looks; None: all of it."""


def region_windows(
    rects: Sequence[Rect], scale: float, full: InputShape, margin: int = REGION_MARGIN
) -> list[Window] | None:
    """Windows of a full input of shape ``full`` covering ``rects`` (image pixels, at ``scale``) with
    ``margin`` input pixels, snapped outwards to the grid of the largest stride (the model's resizes need sides on it)
    and merged where they overlap or touch; None when they would cover more than `REGION_FULL_SHARE` of the full
    input (then one full look is cheaper)."""
    height, width = full
    boxes: list[list[int]] = []
    for x1, y1, x2, y2 in rects:
        a = max(0, math.floor(x1 * scale) - margin)
        b = max(0, math.floor(y1 * scale) - margin)
        c = min(width, math.ceil(x2 * scale) + margin)
        d = min(height, math.ceil(y2 * scale) + margin)
        if c > a and d > b:
            boxes.append([b, d, a, c])
    windows = _merged([_on_grid(w, height, width) for w in boxes])
    if sum((w[1] - w[0]) * (w[3] - w[2]) for w in windows) > REGION_FULL_SHARE * height * width:
        return None
    return [(w[0], w[1], w[2], w[3]) for w in windows]


def _merged(windows: list[list[int]]) -> list[list[int]]:
    """Overlapping or touching ``[y0, y1, x0, x1]`` windows replaced by their bounding windows."""
    out = [list(w) for w in windows]
    changed = True
    while changed:
        changed = False
        for i, j in itertools.combinations(range(len(out)), 2):
            p, q = out[i], out[j]
            if p[0] <= q[1] and q[0] <= p[1] and p[2] <= q[3] and q[2] <= p[3]:
                out[i] = [min(p[0], q[0]), max(p[1], q[1]), min(p[2], q[2]), max(p[3], q[3])]
                del out[j]
                changed = True
                break
    return out


def _on_grid(w: list[int], height: int, width: int) -> list[int]:
    """The window grown outwards to the grid of the largest stride (``height`` and ``width`` are on it): the
    network then sees each person on the same anchors as in a full look (off the grid, boxes move by pixels and
    some weak ones are lost)."""
    step = STRIDES[-1]
    y0, y1, x0, x1 = w
    return [y0 // step * step, min(height, -(-y1 // step) * step), x0 // step * step, min(width, -(-x1 // step) * step)]


def nms(boxes: FloatArray, scores: FloatArray, iou: float) -> npt.NDArray[np.intp]:
    """Greedy non-maximum suppression; returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        overlap = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, np.intp)


class NanoDetDetector:
    """NanoDet (COCO, 416×416) keeping only the *person* class; implements ``PersonDetector``."""

    info: ModelInfo

    def __init__(
        self,
        model_path: Path | None = None,
        score_threshold: float = 0.35,
        nms_iou: float = 0.5,
        tiles: TileMode = "auto",
        tile_overlap: float = 0.2,
        threads: int = 0,
        precision: Precision = "fp32",
        runtime: Runtime = "onnxruntime",
        input_fit: bool = True,
        input_size: int = INPUT_SIZE,
        region_margin: int = REGION_MARGIN,
        max_input_size: int | None = None,
    ) -> None:
        if precision not in ("fp32", "int8", "bf16"):
            raise ValueError(f"precision must be 'fp32', 'int8' or 'bf16', not {precision!r}")
        if runtime not in ("onnxruntime", "openvino"):
            raise ValueError(f"runtime must be 'onnxruntime' or 'openvino', not {runtime!r}")
        if precision == "bf16" and runtime != "openvino":
            raise ValueError("bf16 NanoDet runs on OpenVINO only (SPOTON_NANODET_RUNTIME=openvino)")
        default = DEFAULT_INT8_PATH if precision == "int8" else DEFAULT_MODEL_PATH
        path = Path(model_path) if model_path is not None else default
        if not path.is_file():
            script = "quantize_nanodet.py" if precision == "int8" else "convert_nanodet.py"
            raise FileNotFoundError(
                f"NanoDet {precision} ONNX model not found at {path}. Set SPOTON_NANODET_MODEL_PATH to the file, "
                f"or recreate the shipped one with `python scripts/{script}`."
            )
        if tiles not in ("auto", "1", "2"):
            raise ValueError(f"tiles must be 'auto', '1' or '2', not {tiles!r}")
        if not 0.0 <= tile_overlap < 1.0:
            raise ValueError(f"tile_overlap must be in [0, 1), not {tile_overlap}")
        self.model_path = path
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.tiles: TileMode = tiles
        self.tile_overlap = float(tile_overlap)
        if input_size % STRIDES[-1] or not 128 <= input_size <= 1024:
            raise ValueError(f"input_size must be a multiple of {STRIDES[-1]} in 128..1024, not {input_size}")
        self.input_size = input_size
        top = input_size if max_input_size is None else max_input_size
        if top % STRIDES[-1] or not input_size <= top <= 1024:
            raise ValueError(f"max_input_size must be a multiple of {STRIDES[-1]} in {input_size}..1024, not {top}")
        self.max_input_size = top
        """Largest size a caller may ask for per image (`detect_regions`' ``input_sizes``): a camera whose people
        are small is enlarged up to it (`DetectorScale`); a model file with a fixed input stays at ``input_size``."""
        if region_margin < 0:
            raise ValueError(f"region_margin must be >= 0, not {region_margin}")
        self.region_margin = region_margin

        self.runtime: Runtime = runtime
        self._session: Any
        if runtime == "openvino":
            from app.models.openvino_session import OpenVinoSession

            ov_session = OpenVinoSession(path, threads, "auto" if precision == "int8" else precision)
            if precision != "int8":
                precision = "bf16" if ov_session.precision == "bf16" else "fp32"
            self._session = ov_session
            self._input = ov_session.input_name
            self._dynamic_batch = ov_session.dynamic_batch
            self._dynamic_shape = input_fit and ov_session.dynamic_spatial
            outputs = ov_session.output_names
        else:
            ort_session = cpu_session(path, threads)
            self._session = ort_session
            self._input = ort_session.get_inputs()[0].name
            dims = ort_session.get_inputs()[0].shape
            self._dynamic_batch = not isinstance(dims[0], int)
            self._dynamic_shape = input_fit and not all(isinstance(d, int) for d in dims[2:])
            outputs = {o.name for o in ort_session.get_outputs()}
        self._outputs = [f"cls_s{s}" for s in STRIDES] + [f"dist_s{s}" for s in STRIDES]
        missing = set(self._outputs) - outputs
        if missing:
            raise ValueError(f"{path} lacks outputs {sorted(missing)}; convert it with scripts/convert_nanodet.py")
        self._centers: dict[InputShape, list[FloatArray]] = {}
        self._bins = np.arange(REG_MAX + 1, dtype=np.float32)
        # what a padded (black) pixel becomes after normalisation
        self._pad_value = ((0.0 - MEAN_BGR) / STD_BGR).reshape(3, 1, 1)
        self.precision: Precision = precision
        self.info = ModelInfo(name="nanodet-g", device="cpu", precision=precision if runtime == "onnxruntime"
                              else f"{precision} (openvino)")  # fmt: skip

    @classmethod
    def from_settings(cls, settings: Settings) -> NanoDetDetector:
        runtime, precision = resolve_runtime(settings.nanodet_runtime, settings.nanodet_precision)
        return cls(
            model_path=settings.nanodet_model_path,
            score_threshold=settings.detector_score_threshold,
            nms_iou=settings.detector_nms_iou,
            tiles=settings.nanodet_tiles,
            tile_overlap=settings.nanodet_tile_overlap,
            threads=settings.onnx_threads,
            precision=precision,
            runtime=runtime,
            input_fit=settings.nanodet_input == "fit",
            input_size=settings.nanodet_input_size,
            region_margin=settings.detect_regions_margin,
            max_input_size=max(settings.nanodet_input_size, settings.detect_max_input_size)
            if settings.detect_min_person_px > 0 else None,
        )

    # -- public -------------------------------------------------------------------------------------
    def warmup(self) -> None:
        """One inference so that the first real frame does not pay for onnxruntime's lazy set-up."""
        self._run(np.zeros((1, 3, self.input_size, self.input_size), np.float32))

    def detect(self, images: list[ImageBGR]) -> list[Detections]:
        return self.detect_regions(images, [None] * len(images))

    def detect_regions(
        self, images: list[ImageBGR], regions: Sequence[Sequence[Rect] | None],
        input_sizes: Sequence[int | None] | None = None,
    ) -> list[Detections]:
        """`detect`, looking only around ``regions[i]`` (boxes in image pixels) where it is not None — at the
        scale the whole frame gets: the frame is resized once and windows are cut from it on the network's
        32-pixel grid, so the network sees the same pixels and anchors as in a full look (only the context
        beyond a window's margin differs) for a fraction of the work. An empty list looks nowhere. Frames cut
        into several tiles, and models with a fixed input size, always get the full look."""
        if len(regions) != len(images):
            raise ValueError(f"{len(regions)} region lists for {len(images)} images")
        if not images:
            return []
        images = [self._as_bgr(im) for im in images]
        sizes = list(input_sizes) if input_sizes is not None else [None] * len(images)
        if len(sizes) != len(images):
            raise ValueError(f"{len(sizes)} input sizes for {len(images)} images")
        jobs = [job for i, im in enumerate(images) for job in self._jobs_of(i, im, regions[i], sizes[i])]
        resized: dict[int, ImageBGR] = {}
        per_image: list[list[tuple[FloatArray, FloatArray]]] = [[] for _ in images]
        for shape in dict.fromkeys(j.shape for j in jobs):  # one batch per input shape; cameras of one size share one
            group = [j for j in jobs if j.shape == shape]
            batch = np.empty((len(group), 3, *shape), np.float32)
            for k, j in enumerate(group):
                if j.window is None:
                    self._preprocess(images[j.tile.image], j.tile, batch[k])
                else:
                    if j.tile.image not in resized:
                        resized[j.tile.image] = self._resized(images[j.tile.image], j.tile)
                    self._preprocess_window(resized[j.tile.image], j.window, batch[k])
            step = MAX_BATCH if self._dynamic_batch else 1
            outputs = [self._run(batch[i : i + step]) for i in range(0, len(group), step)]
            merged = [np.concatenate(parts, axis=0) for parts in zip(*outputs, strict=True)]
            for k, j in enumerate(group):
                offset = (0.0, 0.0) if j.window is None else (float(j.window[2]), float(j.window[0]))
                per_image[j.tile.image].append(self._decode([m[k] for m in merged], j.tile, shape, offset))

        results = []
        for im, parts in zip(images, per_image, strict=True):
            if not parts:  # told to look nowhere
                results.append(Detections())
                continue
            boxes = np.concatenate([p[0] for p in parts], axis=0)
            scores = np.concatenate([p[1] for p in parts], axis=0)
            if len(boxes):
                keep = nms(boxes, scores, self.nms_iou)
                boxes, scores = boxes[keep], scores[keep]
                h, w = im.shape[:2]
                np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
                np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
                visible = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
                boxes, scores = boxes[visible], scores[visible]
            results.append(Detections(boxes.astype(np.float32), scores.astype(np.float32)))
        return results

    # -- internals ----------------------------------------------------------------------------------
    @staticmethod
    def _as_bgr(im: ImageBGR) -> ImageBGR:
        if im.ndim == 2:
            return cast(ImageBGR, cv2.cvtColor(im, cv2.COLOR_GRAY2BGR))
        if im.shape[2] == 4:
            return cast(ImageBGR, cv2.cvtColor(im, cv2.COLOR_BGRA2BGR))
        return im

    def _jobs_of(self, index: int, im: ImageBGR, rects: Sequence[Rect] | None, size: int | None) -> list[_Job]:
        tiles = self._tiles_of(index, im, size)
        if rects is None or len(tiles) != 1 or not self._dynamic_shape:
            return [_Job(t, input_shape(t, self._dynamic_shape, self.largest_input)) for t in tiles]
        t = tiles[0]
        full = input_shape(t, True, self.largest_input)
        windows = region_windows(rects, t.scale, full, self.region_margin)
        if windows is None:
            return [_Job(t, full)]
        return [_Job(t, (y1 - y0, x1 - x0), (y0, y1, x0, x1)) for y0, y1, x0, x1 in windows]

    @property
    def largest_input(self) -> int:
        """The largest input side: ``max_input_size`` where the model takes any shape, else its fixed size."""
        return self.max_input_size if self._dynamic_shape else self.input_size

    def _tiles_of(self, index: int, im: ImageBGR, size: int | None = None) -> list[Tile]:
        """One full-frame tile, or side-by-side tiles sharing ``tile_overlap`` of their width, scaled to fit
        ``size`` (at most ``max_input_size``; None: the model's input size)."""
        h, w = im.shape[:2]
        fit = self.input_size if size is None else max(STRIDES[-1], min(size, self.largest_input))
        return plan_tiles(index, w, h, tile_count(self.tiles, w, h), self.tile_overlap, fit)

    def _resized(self, im: ImageBGR, t: Tile) -> ImageBGR:
        """The tile's crop at the network's scale (at most its full input's size)."""
        crop = im[t.y0 : t.y1, t.x0 : t.x1]
        limit_h, limit_w = input_shape(t, self._dynamic_shape, self.largest_input)
        rw = min(limit_w, round((t.x1 - t.x0) * t.scale))
        rh = min(limit_h, round((t.y1 - t.y0) * t.scale))
        interpolation = cv2.INTER_LINEAR if t.scale > 1 else cv2.INTER_AREA
        return cast(ImageBGR, cv2.resize(crop, (rw, rh), interpolation=interpolation))

    def _preprocess(self, im: ImageBGR, t: Tile, out: FloatArray) -> None:
        """Letterbox the crop into the top-left of the input ``out`` (keeps aspect ratio), normalise, CHW."""
        self._normalise_into(self._resized(im, t), out)

    def _preprocess_window(self, resized: ImageBGR, window: Window, out: FloatArray) -> None:
        """A window of the resized frame into ``out``; what lies beyond the frame is padding, as in a full look."""
        y0, y1, x0, x1 = window
        self._normalise_into(resized[y0:y1, x0:x1], out)

    def _normalise_into(self, image: ImageBGR, out: FloatArray) -> None:
        rh, rw = image.shape[:2]
        out[:, rh:, :] = self._pad_value
        out[:, :rh, rw:] = self._pad_value
        # per channel straight into the CHW input: the same values as normalising the HWC image and transposing,
        # without the float HWC copy and the strided transpose (10x faster on a 416x312 tile)
        for c, plane in enumerate(cv2.split(image)):
            np.divide(np.subtract(plane, MEAN_BGR[c], dtype=np.float32), STD_BGR[c], out=out[c, :rh, :rw])

    def _run(self, batch: FloatArray) -> list[FloatArray]:
        if self._dynamic_batch or len(batch) == 1:
            return list(self._session.run(self._outputs, {self._input: batch}))
        parts = [self._session.run(self._outputs, {self._input: batch[i : i + 1]}) for i in range(len(batch))]
        return [np.concatenate(p, axis=0) for p in zip(*parts, strict=True)]

    def _decode(
        self, outs: list[FloatArray], t: Tile, shape: InputShape, offset: tuple[float, float] = (0.0, 0.0)
    ) -> tuple[FloatArray, FloatArray]:
        """GFL decode of the person class: softmax over 11 bins → expected distance × stride per side."""
        n = len(STRIDES)
        centers = self._centers.get(shape)
        if centers is None:
            centers = self._centers[shape] = _centers(shape)
        boxes_all, scores_all = [], []
        for level, stride in enumerate(STRIDES):
            scores = outs[level][:, PERSON]
            idx = np.flatnonzero(scores > self.score_threshold)
            if idx.size == 0:
                continue
            logits = outs[n + level][idx].reshape(-1, 4, REG_MAX + 1)
            logits = logits - logits.max(axis=2, keepdims=True)
            prob = np.exp(logits)
            dist = (prob @ self._bins) / prob.sum(axis=2) * stride
            c = centers[level][idx]
            boxes_all.append(np.concatenate([c - dist[:, :2], c + dist[:, 2:]], axis=1))
            scores_all.append(scores[idx])
        if not boxes_all:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        boxes = np.concatenate(boxes_all, axis=0)
        scores = np.concatenate(scores_all, axis=0)
        if offset != (0.0, 0.0):
            boxes = boxes + np.array([offset[0], offset[1], offset[0], offset[1]], np.float32)
        return t.to_image(boxes, scores)
