"""Make ``app/assets/nanodet-int8.onnx``: NanoDet with int8 weights and activations (onnxruntime static
quantisation, QDQ, per-channel weights), calibrated on frames of the demo builder's own video.

Calibration frames come only from the demo environment that ``spoton build-demo`` makes (PETS2009 View_001 as
shipped in Debian's opencv-doc, warped into four views), never from ``../shared`` evaluation sets. They go through
the detector's own preprocessing (``NanoDetDetector``: tiling, letterbox, normalisation), so the ranges are those
the model sees in the product.

    python scripts/quantize_nanodet.py [--demo DIR] [--frames 96] [--method minmax|percentile|entropy]

The output is deterministic for the same inputs (calibration frames are taken at fixed positions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from static_int8 import quantize_qdq  # noqa: E402

from app.models.nanodet import DEFAULT_INT8_PATH, DEFAULT_MODEL_PATH, NanoDetDetector, input_shape  # noqa: E402


def calibration_tiles(demo: Path, frames: int) -> list[np.ndarray]:
    """Detector inputs (1×3×H×W, the shapes the product feeds) from ``frames`` frames spread evenly over every demo
    camera's video."""
    videos = sorted(p for p in demo.iterdir() if p.suffix in (".mp4", ".avi"))
    if not videos:
        raise SystemExit(f"no videos in {demo}: run `spoton build-demo` first")
    det = NanoDetDetector(DEFAULT_MODEL_PATH)
    per_video = max(1, frames // len(videos))
    out: list[np.ndarray] = []
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in np.linspace(0, total - 1, per_video).round().astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(k))
            ok, img = cap.read()
            if not ok:
                continue
            for t in det._tiles_of(0, img):
                x = np.empty((1, 3, *input_shape(t, dynamic=True)), np.float32)
                det._preprocess(img, t, x[0])
                out.append(x)
        cap.release()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=ROOT / "var" / "demo" / "environment")
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax")
    ap.add_argument("--keep-heads-fp32", action="store_true", help="leave the output heads unquantised")
    ap.add_argument("--out", type=Path, default=DEFAULT_INT8_PATH)
    args = ap.parse_args()

    import onnxruntime as ort

    input_name = ort.InferenceSession(str(DEFAULT_MODEL_PATH)).get_inputs()[0].name
    tiles = calibration_tiles(args.demo, args.frames)
    print(f"calibrating on {len(tiles)} tiles from {args.demo}")

    def heads(g: Any) -> list[str]:
        outputs = {o.name for o in g.output}
        return [n.name for n in g.node if n.op_type == "Conv" and set(n.output) & _feeding(g, outputs)]

    digest = quantize_qdq(DEFAULT_MODEL_PATH, args.out, tiles, input_name, args.method,
                          heads if args.keep_heads_fp32 else None)  # fmt: skip
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, sha256 {digest})")


def _feeding(graph: object, names: set[str]) -> set[str]:
    """Tensors from which the given outputs follow through shape-only ops (the heads' last convolutions)."""
    producers = {o: n for n in graph.node for o in n.output}  # type: ignore[attr-defined]
    found: set[str] = set()
    todo = list(names)
    while todo:
        t = todo.pop()
        n = producers.get(t)
        if n is None:
            continue
        found.add(t)
        if n.op_type != "Conv":
            todo.extend(n.input)
    return found


if __name__ == "__main__":
    main()
