"""CenterNet (MobileNetV3) person detector on the CPU with onnxruntime (an offline alternative to NanoDet).

The ONNX file (``app/assets/centernet.onnx``, made by ``scripts/convert_centernet.py``) takes a batch of
512×512 RGB 0–255 NHWC tiles and returns per-class centre heat maps and box extents at stride 4. Only the
person heat map is decoded: a person is a cell that equals the maximum of its 3×3 neighbourhood (CenterNet's
max-pool "NMS", as in the source graph) and scores above the threshold; its box is the cell's point ∓ the
predicted left/top/right/bottom extents.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import cv2
import numpy as np

from app.models.base import Detections, FloatArray, ImageBGR, ModelInfo
from app.models.nanodet import nms
from app.models.onnx_session import cpu_session
from app.models.tiling import Tile, plan_tiles, tile_count

if TYPE_CHECKING:
    from app.core.config import Settings

DEFAULT_MODEL_PATH = Path(__file__).resolve().parents[1] / "assets" / "centernet.onnx"
INPUT_SIZE = 512
STRIDE = 4
PERSON = 0
MAX_PEAKS = 100
"""Peaks kept per tile, best first (the source graph keeps 100 over all classes)."""
MAX_BATCH = 8
"""Tiles per onnxruntime call: bounds activation memory when many cameras arrive at once."""


class CenterNetDetector:
    """CenterNet-MobileNetV3 (COCO, 512×512) keeping only the *person* class; implements ``PersonDetector``."""

    info: ModelInfo

    def __init__(
        self,
        model_path: Path | None = None,
        score_threshold: float = 0.3,
        nms_iou: float = 0.5,
        tiles: str = "auto",
        tile_overlap: float = 0.2,
        threads: int = 0,
    ) -> None:
        path = Path(model_path) if model_path is not None else DEFAULT_MODEL_PATH
        if not path.is_file():
            raise FileNotFoundError(
                f"CenterNet ONNX model not found at {path}. Set SPOTON_CENTERNET_MODEL_PATH to the file, or "
                f"recreate the shipped one with `python scripts/convert_centernet.py`."
            )
        tile_count(tiles, 1, 1)  # validates the mode
        if not 0.0 <= tile_overlap < 1.0:
            raise ValueError(f"tile_overlap must be in [0, 1), not {tile_overlap}")
        if not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), not {score_threshold}")
        self.model_path = path
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.tiles = tiles
        self.tile_overlap = float(tile_overlap)

        self._session = cpu_session(path, threads)
        inp = self._session.get_inputs()[0]
        if list(inp.shape[1:]) != [INPUT_SIZE, INPUT_SIZE, 3]:
            raise ValueError(f"{path} takes {inp.shape}, not [batch, 512, 512, 3]; convert it with "
                             f"scripts/convert_centernet.py")
        self._input = inp.name
        self._dynamic_batch = not isinstance(inp.shape[0], int)
        missing = {"keypoints", "wh"} - {o.name for o in self._session.get_outputs()}
        if missing:
            raise ValueError(f"{path} lacks outputs {sorted(missing)}; convert it with scripts/convert_centernet.py")
        self.info = ModelInfo(name="centernet-mobilenetv3", device="cpu", precision="fp32")

    @classmethod
    def from_settings(cls, settings: Settings) -> CenterNetDetector:
        return cls(
            model_path=settings.centernet_model_path,
            score_threshold=settings.centernet_score_threshold,
            nms_iou=settings.detector_nms_iou,
            tiles=settings.centernet_tiles,
            tile_overlap=settings.centernet_tile_overlap,
            threads=settings.onnx_threads,
        )

    # -- public -------------------------------------------------------------------------------------
    def warmup(self) -> None:
        """One inference so that the first real frame does not pay for onnxruntime's lazy set-up."""
        self._run(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.float32))

    def detect(self, images: list[ImageBGR]) -> list[Detections]:
        if not images:
            return []
        images = [_as_bgr(im) for im in images]
        tiles = [t for i, im in enumerate(images) for t in self.tiles_of(i, im)]
        batch = np.zeros((len(tiles), INPUT_SIZE, INPUT_SIZE, 3), np.float32)
        for k, t in enumerate(tiles):
            _letterbox(images[t.image], t, batch[k])
        step = MAX_BATCH if self._dynamic_batch else 1
        heat_parts, wh_parts = [], []
        for i in range(0, len(tiles), step):
            heat, wh = self._run(batch[i : i + step])
            heat_parts.append(heat)
            wh_parts.append(wh)
        heats, whs = np.concatenate(heat_parts), np.concatenate(wh_parts)

        per_image: list[list[tuple[FloatArray, FloatArray]]] = [[] for _ in images]
        for k, t in enumerate(tiles):
            boxes, scores = self._decode(heats[k], whs[k])
            per_image[t.image].append(t.to_image(boxes, scores))

        results = []
        for im, parts in zip(images, per_image, strict=True):
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

    def tiles_of(self, index: int, im: ImageBGR) -> list[Tile]:
        h, w = im.shape[:2]
        return plan_tiles(index, w, h, tile_count(self.tiles, w, h), self.tile_overlap, INPUT_SIZE)

    # -- internals ----------------------------------------------------------------------------------
    def _run(self, batch: FloatArray) -> tuple[FloatArray, FloatArray]:
        if self._dynamic_batch or len(batch) == 1:
            heat, wh = self._session.run(["keypoints", "wh"], {self._input: batch})
            return heat, wh
        parts = [self._session.run(["keypoints", "wh"], {self._input: batch[i : i + 1]}) for i in range(len(batch))]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _decode(self, heat: FloatArray, wh: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Peaks of the person heat map (``heat`` 80×g×g, ``wh`` 4×g×g) → input-pixel boxes and scores."""
        person = np.ascontiguousarray(heat[PERSON])
        peak = cv2.dilate(person, np.ones((3, 3), np.uint8))  # 3×3 max-pool, borders ignored
        ys, xs = np.nonzero((person == peak) & (person > self.score_threshold))
        if ys.size == 0:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        scores = person[ys, xs]
        if scores.size > MAX_PEAKS:
            best = np.argsort(-scores, kind="stable")[:MAX_PEAKS]
            ys, xs, scores = ys[best], xs[best], scores[best]
        left, top, right, bottom = wh[:, ys, xs]
        cx, cy = xs.astype(np.float32) * STRIDE, ys.astype(np.float32) * STRIDE
        boxes = np.stack([cx - left, cy - top, cx + right, cy + bottom], axis=1).astype(np.float32)
        return boxes, scores.astype(np.float32)


def _as_bgr(im: ImageBGR) -> ImageBGR:
    if im.ndim == 2:
        return cast(ImageBGR, cv2.cvtColor(im, cv2.COLOR_GRAY2BGR))
    if im.shape[2] == 4:
        return cast(ImageBGR, cv2.cvtColor(im, cv2.COLOR_BGRA2BGR))
    return im


def _letterbox(im: ImageBGR, t: Tile, out: FloatArray) -> None:
    """The crop resized (aspect kept) into the top-left of a zeroed 512×512 RGB input, values 0–255."""
    crop = im[t.y0 : t.y1, t.x0 : t.x1]
    rw = min(INPUT_SIZE, round((t.x1 - t.x0) * t.scale))
    rh = min(INPUT_SIZE, round((t.y1 - t.y0) * t.scale))
    resized = cv2.resize(crop, (rw, rh), interpolation=cv2.INTER_LINEAR if t.scale > 1 else cv2.INTER_AREA)
    out[:rh, :rw] = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
