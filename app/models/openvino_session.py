"""Running an ONNX model with OpenVINO on the CPU, behind onnxruntime's ``run(outputs, feeds)`` call shape.

Why: on CPUs with AMX or AVX512-BF16 OpenVINO infers in bfloat16 (its default there), which runs NanoDet about
4× faster than float32 on this machine's cores at the same detection accuracy (docs/performance.md); on CPUs
without native bfloat16 it infers in float32, like onnxruntime. ``precision`` forces one or the other.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np

OvPrecision = Literal["auto", "fp32", "bf16"]


@functools.cache
def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (OpenVINO's ``BF16`` capability: AMX or AVX512-BF16)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoSession:
    def __init__(self, path: Path, threads: int = 0, precision: OvPrecision = "auto") -> None:
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision == "fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        elif precision == "bf16":
            if not native_bf16():
                raise ValueError("bf16 inference needs a CPU with native bfloat16 (AMX or AVX512-BF16)")
            config["INFERENCE_PRECISION_HINT"] = "bf16"
        self._compiled = core.compile_model(str(path), "CPU", config)
        self._local = threading.local()
        first = self._compiled.inputs[0]
        self.input_name = first.get_any_name()
        self.dynamic_batch = first.get_partial_shape()[0].is_dynamic
        self.dynamic_spatial = any(d.is_dynamic for d in list(first.get_partial_shape())[2:])
        self.output_names = {name for o in self._compiled.outputs for name in o.get_names()}
        hint = str(self._compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
        self.precision = "bf16" if "bf16" in hint or "bfloat16" in hint else "fp32"
        """What the CPU plugin actually computes in."""

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Thread-safe like onnxruntime's ``run``: each thread has its own infer request (one request cannot
        serve two calls at once, and tasks share the detector from their own threads)."""
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self._compiled.create_infer_request()
        result = request.infer(feeds)
        by_name = {k.get_any_name(): v for k, v in result.items()}
        return [np.asarray(by_name[o]) for o in outputs]
